"""Tiny sweeps for the sweep-command tests: the suite's tiny classifier settings, one epoch, no W&B."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.classifier import write_config

#: no last.ckpt (a ResNet-18 3D checkpoint costs seconds to write) unless a test resumes
NO_CHECKPOINT = ["--checkpoint.save_last", "false"]


def tiny_sweep_config(tmp_path: Path, **trainer) -> Path:
    """A full ``i2p fit`` config on the tiny data (4 classes, 32/12/12 shapes), CPU, 1 epoch."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(tmp_path, regime="all", enable_model_summary=False, **trainer)
