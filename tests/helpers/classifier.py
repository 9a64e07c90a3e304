"""Tiny settings shared by the classifier, CLI, DDP and resume tests (all on 2 CPU cores).

Voxel 0.25 on unit-sphere shapes gives ~60-100 voxels per shape, so a ResNet-18 step is cheap;
four well-separated SyntheticShapes classes keep "learns" checks meaningful in a few steps.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import yaml

CLASSES = ["sphere", "torus", "table", "arrow"]
DATA_ARGS = dict(
    num_train=32, num_val=12, num_test=12, points_per_shape=256, num_points=256, voxel_size=0.25,
    batch_size=8, classes=CLASSES, partial_prob=0.0,
)
PRETRAIN_ARGS = ["--model", "resnet18", "--image-size", "32", "--num-images", "320", "--epochs", "1",
                 "--batch-size", "32"]


def tiny_data(**overrides):
    from datamodules import SyntheticShapes

    return SyntheticShapes(**{**DATA_ARGS, **overrides})


@functools.cache
def tiny_pretrained_2d() -> Path:
    """A tiny ``i2p pretrain2d`` checkpoint, made once per test session (a few seconds)."""
    from i2p.cli import pretrain2d

    out = Path(tempfile.mkdtemp(prefix="i2p-pretrain2d-")) / "resnet18_tiny.pth"
    path, _ = pretrain2d.run([*PRETRAIN_ARGS, "--output", str(out)])
    return path


def write_config(tmp_path: Path, pretrained: str | bool = False, regime: str = "all", wandb: bool = False,
                 data: dict | None = None, **trainer) -> Path:
    """A full ``i2p fit`` config (class_path/init_args) on the tiny data; no W&B unless ``wandb``."""
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
            "default_root_dir": str(tmp_path), **trainer,  # run files (collapse plot, ...) stay in tmp_path
        },
        "data": {"class_path": "datamodules.SyntheticShapes", "init_args": {**DATA_ARGS, **(data or {})}},
        "model": {"class_path": "models.PointClassifier",
                  "init_args": {"backbone": "resnet18", "regime": regime, "pretrained": pretrained, "lr": 0.05}},
        "checkpoint": {"dirpath": str(tmp_path / "ckpt")},
    }
    if wandb:
        del cfg["trainer"]["logger"]  # the CLI default: W&B, offline without credentials
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
