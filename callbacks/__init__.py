"""Lightning callbacks: neural-collapse metrics, W&B media, time to accuracy."""

from callbacks.neural_collapse import NeuralCollapse
from callbacks.time_to_accuracy import TimeToAccuracy
from callbacks.wandb_media import WandbMedia

__all__ = ["NeuralCollapse", "TimeToAccuracy", "WandbMedia"]
