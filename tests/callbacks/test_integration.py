"""NeuralCollapse and TimeToAccuracy on the real PointClassifier and SyntheticShapes (tiny, CPU)."""

import json
import math

import pytest
import pytorch_lightning as pl
import torch

import datamodules
import models
from callbacks import NeuralCollapse, TimeToAccuracy
from callbacks.neural_collapse import METRICS


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16: Lightning's CPU autocast end to end
def test_real_classifier_and_synthetic_shapes(tmp_path, precision):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = datamodules.SyntheticShapes(
            num_train=12, num_val=6, num_test=3, points_per_shape=256, num_points=256, voxel_size=0.2,
            batch_size=4, classes=["cube", "sphere", "torus"],
        )  # fmt: skip
        model = models.PointClassifier(backbone="resnet18", num_classes=3, class_names=data.class_names, regime="io")
        frozen = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                  and not any(p.requires_grad for p in m.parameters())]
        nc = NeuralCollapse()
        dtypes = set()

        class LogitsDtype(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                dtypes.add(outputs["logits"].dtype)

        trainer = pl.Trainer(
            accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path), precision=precision,
            callbacks=[nc, TimeToAccuracy(thresholds=(0.0, 1.01)), LogitsDtype()],
        )  # fmt: skip
        with pytest.warns(UserWarning, match="frozen random layers"):  # io without weights: fine for plumbing
            trainer.fit(model, data)
    finally:
        torch.set_num_threads(before)
    assert dtypes == {torch.bfloat16 if precision == "bf16-mixed" else torch.float32}  # autocast really on (or off)
    m = trainer.callback_metrics
    for split, n in (("train", 12), ("val", 6)):
        assert all(f"nc/{split}/{k}" in m for k in METRICS)
        assert float(m[f"nc/{split}/num_samples"]) == n and float(m[f"nc/{split}/classes_present"]) == 3
        assert math.isfinite(float(m[f"nc/{split}/nc1"])) and math.isfinite(float(m[f"nc/{split}/nc3"]))
    assert frozen and not any(b.training for b in frozen)  # the regime's frozen BN survived the eval pass
    report = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert report["thresholds"]["0"]["epoch"] == 0 and report["thresholds"]["1.01"] is None
    assert (tmp_path / "neural_collapse.png").exists()
