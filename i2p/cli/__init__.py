"""The application (top floor): the ``i2p`` console script, LightningCLI, the extra commands and the
W&B logger. It imports everything below it; nothing in the project imports it (docs/architecture.md).
"""

from i2p.cli.main import main

__all__ = ["main"]
