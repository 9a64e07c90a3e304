"""SemanticKITTI: lidar scans and their per-point labels.

Layout: ``<root>/sequences/NN/velodyne/NNNNNN.bin`` (float32 ``x y z remission``) and
``<root>/sequences/NN/labels/NNNNNN.label`` (uint32 per point: low 16 bits the semantic id, high 16
the instance id), or ``root`` itself holding ``NN/``. The standard learning map (the data set's
``semantic-kitti.yaml``) sends the raw ids to 19 classes + ignore, moving classes merged into their
static ones. Splits: train 00-07, 09, 10; val 08 (also the ``test`` split, labelled, like
ModelNet's); ``predict`` on the test sequences 11-21, which have no labels.

The official recipe (docs/recipes.md): voxel 0.05, features ``xyz+remission``, rotation about z
and scale U(0.95, 1.05) (the ``semantic_kitti`` augmentation), at most 80k voxels per training scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .segmentation import IGNORE_INDEX, SegmentationDataModule

__all__ = ["KITTI_CLASSES", "KITTI_LEARNING_MAP", "learning_map_table", "read_scan", "read_labels", "SemanticKITTI"]

KITTI_CLASSES = ["car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
                 "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain",
                 "pole", "traffic-sign"]
#: raw semantic id -> learning class 1..19, 0 = ignore (semantic-kitti.yaml's ``learning_map``)
KITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11, 49: 12,
    50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip
SPLIT_SEQUENCES = {"train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"], "val": ["08"],
                   "test": ["08"], "predict": [f"{i:02d}" for i in range(11, 22)]}


def learning_map_table(ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Lookup ``[65536]`` raw semantic id -> class 0..18 or ``ignore_index`` (unknown ids: ignore)."""
    table = np.full(1 << 16, ignore_index, dtype=np.int64)
    for raw, learned in KITTI_LEARNING_MAP.items():
        table[raw] = learned - 1 if learned > 0 else ignore_index
    return table


def read_scan(path: str | Path) -> np.ndarray:
    """A ``.bin`` scan -> float32 ``[P, 4]`` (x, y, z, remission); errors name the file."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.float32)
    if data.size == 0 or data.size % 4:
        raise ValueError(f"{path}: {data.size} float32 values, expected a non-empty multiple of 4 (x y z remission)")
    return data.reshape(-1, 4)


def read_labels(path: str | Path, num_points: int) -> np.ndarray:
    """A ``.label`` file -> raw semantic ids ``[P]`` (the low 16 bits; the instance bits dropped)."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint32)
    if raw.size != num_points:
        raise ValueError(f"{path}: {raw.size} labels for {num_points} points of its scan; expected one uint32 a point")
    return (raw & 0xFFFF).astype(np.int64)


class SemanticKITTI(SegmentationDataModule):
    """SemanticKITTI scans (19 classes), the official recipe's defaults.

    Args:
        root: folder holding ``sequences/`` (or the sequence folders themselves).
        train_sequences / val_sequences / test_sequences / predict_sequences: override the splits.
        max_voxels: cap on the voxels of a training scan (80,000, the official).
        **kwargs: ``SegmentationDataModule`` arguments (voxel 0.05, ``xyz+remission``, the
            ``semantic_kitti`` augmentation, batch 2 by default).
    """

    class_names = KITTI_CLASSES

    def __init__(self, root: str = "data/semantic_kitti", train_sequences: Sequence[str] | None = None,
                 val_sequences: Sequence[str] | None = None, test_sequences: Sequence[str] | None = None,
                 predict_sequences: Sequence[str] | None = None, max_voxels: int | None = 80_000,
                 features: str = "xyz+remission", voxel_size: float = 0.05, augmentation: Any = "semantic_kitti",
                 batch_size: int = 2, **kwargs: Any) -> None:
        super().__init__(features=features, voxel_size=voxel_size, augmentation=augmentation, batch_size=batch_size,
                         max_voxels=max_voxels, **kwargs)
        self.root = Path(root)
        given = {"train": train_sequences, "val": val_sequences, "test": test_sequences, "predict": predict_sequences}
        self.sequences = {k: [f"{int(s):02d}" for s in (v if v is not None else SPLIT_SEQUENCES[k])]
                          for k, v in given.items()}
        self.table = learning_map_table(self.ignore_index)

    def sequences_dir(self) -> Path:
        for d in (self.root / "sequences", self.root):
            if d.is_dir() and any(p.is_dir() and (p / "velodyne").is_dir() for p in d.iterdir()):
                return d
        raise FileNotFoundError(f"SemanticKITTI: no sequences/NN/velodyne under {self.root.resolve()}; expected "
                                "sequences/NN/velodyne/NNNNNN.bin and sequences/NN/labels/NNNNNN.label")

    def _scans(self, split: str) -> list[tuple[Path, Path | None]]:
        items = []
        for seq in self.sequences[split]:
            velodyne = self.sequences_dir() / seq / "velodyne"
            if not velodyne.is_dir():
                raise FileNotFoundError(f"SemanticKITTI: {velodyne} missing (split {split!r} lists sequence {seq})")
            labels = velodyne.parent / "labels"
            for scan in sorted(velodyne.glob("*.bin")):
                label = labels / f"{scan.stem}.label"
                if split != "predict" and not label.is_file():
                    raise FileNotFoundError(f"SemanticKITTI: {label} missing for {scan} (split {split!r} needs labels)")
                items.append((scan, label if label.is_file() else None))
        return items

    def list_samples(self, split: str) -> list:
        return self._scans(split)

    def list_predict_samples(self) -> list:
        return self._scans("predict")

    def describe_sample(self, item: tuple[Path, Path | None]) -> str:
        return f"SemanticKITTI scan {item[0]}"

    def read_sample(self, item: tuple[Path, Path | None]) -> dict:
        scan_path, label_path = item
        scan = read_scan(scan_path)
        if label_path is None:  # the test sequences: no labels, every point ignored
            label = np.full(len(scan), self.ignore_index, np.int64)
        else:
            label = self.table[read_labels(label_path, len(scan))]
        return {"points": scan[:, :3], "remission": scan[:, 3], "label": label}
