"""Tiny segmentation settings shared by the segmenter, callback, CLI and DDP tests (2 CPU cores).

Rooms 3-3.5 m at 25 points per m^2 and voxel 0.5: ~250-300 voxels a room, so a light UNet step takes
a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOM_ARGS = dict(num_train=8, num_val=5, num_test=3, room_size=(3.0, 3.5), density=25.0, voxel_size=0.5,
                 batch_size=2)
MODEL_ARGS = dict(backbone="resnet18", preset="light", decoder_channels=[32, 32, 32, 32], lr=0.1)


def tiny_rooms(**overrides):
    from datamodules import SyntheticRooms

    return SyntheticRooms(**{**ROOM_ARGS, **overrides})


def tiny_segmenter(data, **overrides):
    from models import PointSegmenter

    args = {**MODEL_ARGS, "regime": "ioms", **overrides}  # frozen encoder kernels: the cheap backward
    return PointSegmenter(num_classes=data.num_classes, in_channels=data.in_channels, class_names=data.class_names,
                          **args)


def write_seg_config(tmp_path: Path, regime: str = "ioms", pretrained: str | bool = False, data: dict | None = None,
                     model: dict | None = None, **trainer) -> Path:
    """A full ``i2p fit`` config on the tiny rooms, no W&B, checkpoints monitored by val/miou."""
    room = {k: list(v) if isinstance(v, tuple) else v for k, v in ROOM_ARGS.items()}
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1, **trainer,
        },
        "data": {"class_path": "datamodules.SyntheticRooms", "init_args": {**room, **(data or {})}},
        "model": {"class_path": "models.PointSegmenter",
                  "init_args": {**MODEL_ARGS, "regime": regime, "pretrained": pretrained, **(model or {})}},
        "checkpoint": {"dirpath": str(tmp_path / "ckpt"), "monitor": "val/miou",
                       "filename": "best-{epoch}"},
    }
    path = tmp_path / "tiny_seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
