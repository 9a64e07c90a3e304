"""Where a run's files go: the parent of Lightning's default checkpoint directory."""

from __future__ import annotations

import os

from pytorch_lightning import Trainer

__all__ = ["run_directory"]


def run_directory(trainer: Trainer) -> str:
    """``<save_dir>/<name>/<version>`` of the first logger (as ModelCheckpoint resolves it), else
    ``default_root_dir``. ``trainer.log_dir`` is not per run for W&B (it is the shared save_dir).

    Collective (rank 0's answer is broadcast): call it on every rank.
    """
    path = trainer.default_root_dir
    if trainer.is_global_zero and trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        path = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), version)
    return trainer.strategy.broadcast(path, src=0)
