"""ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``): part segmentation.

Layout: ``<root>/shapenetcore_partanno_segmentation_benchmark_v0_normal/<synset>/<id>.txt`` (or
``root`` itself), lines ``x y z nx ny nz part``, and the split lists
``train_test_split/shuffled_{train,val,test}_file_list.json`` (entries ``shape_data/<synset>/<id>``).
16 categories, 50 parts; each shape's category is a per-shape input (``category``, one-hot to the
segmenter's head), and predictions are restricted to its category's parts (``category_parts``).
Unit-sphere shapes, every point kept; there is no official Image2Point recipe for this set (our
defaults: voxel 0.02, ``xyz+normal``, the ``paper`` augmentation; docs/segmentation.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .segmentation import SegmentationDataModule

__all__ = ["SHAPENET_CATEGORIES", "SHAPENET_SYNSETS", "SHAPENET_PARTS", "RELEASE_DIR", "ShapeNetPart"]

#: category -> (synset, number of parts); part ids run consecutively in this order (0..49)
_TABLE = [
    ("Airplane", "02691156", 4), ("Bag", "02773838", 2), ("Cap", "02954340", 2), ("Car", "02958343", 4),
    ("Chair", "03001627", 4), ("Earphone", "03261776", 3), ("Guitar", "03467517", 3), ("Knife", "03624134", 2),
    ("Lamp", "03636649", 4), ("Laptop", "03642806", 2), ("Motorbike", "03790512", 6), ("Mug", "03797390", 2),
    ("Pistol", "03948459", 3), ("Rocket", "04099429", 3), ("Skateboard", "04225987", 3), ("Table", "04379243", 3),
]  # fmt: skip
SHAPENET_CATEGORIES = [name for name, _, _ in _TABLE]
SHAPENET_SYNSETS = {synset: k for k, (_, synset, _) in enumerate(_TABLE)}
SHAPENET_PARTS: list[list[int]] = []
for _, _, _n in _TABLE:
    _start = sum(len(p) for p in SHAPENET_PARTS)
    SHAPENET_PARTS.append(list(range(_start, _start + _n)))
PART_NAMES = [f"{name.lower()}_{i}" for (name, _, n) in _TABLE for i in range(n)]
RELEASE_DIR = "shapenetcore_partanno_segmentation_benchmark_v0_normal"


class ShapeNetPart(SegmentationDataModule):
    """ShapeNetPart shapes with per-point part labels (50 classes) and their category (16).

    Args:
        root: folder holding the normal-format release (or that folder itself).
        **kwargs: ``SegmentationDataModule`` arguments (defaults: voxel 0.02, features ``xyz+normal``,
            unit-sphere normalisation, the ``paper`` augmentation, batch 16).
    """

    class_names = PART_NAMES
    category_parts = SHAPENET_PARTS
    category_names = SHAPENET_CATEGORIES

    def __init__(self, root: str = "data/shapenet_part", features: str = "xyz+normal", voxel_size: float = 0.02,
                 normalize: bool = True, augmentation: Any = "paper", batch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(features=features, voxel_size=voxel_size, normalize=normalize, augmentation=augmentation,
                         batch_size=batch_size, **kwargs)
        self.root = Path(root)

    def release_dir(self) -> Path:
        for d in (self.root / RELEASE_DIR, self.root):
            if (d / "train_test_split").is_dir():
                return d
        raise FileNotFoundError(f"ShapeNetPart: no train_test_split/ under {self.root.resolve()}; expected "
                                f"{RELEASE_DIR}/<synset>/<id>.txt and {RELEASE_DIR}/train_test_split/"
                                "shuffled_<split>_file_list.json")

    def list_samples(self, split: str) -> list:
        listing = self.release_dir() / "train_test_split" / f"shuffled_{split}_file_list.json"
        if not listing.is_file():
            raise FileNotFoundError(f"ShapeNetPart: split file {listing} missing; expected the release's "
                                    "train_test_split/shuffled_{train,val,test}_file_list.json")
        try:
            entries = json.loads(listing.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{listing}: not valid JSON ({e}); expected a list of 'shape_data/<synset>/<id>'"
                             ) from None
        if not isinstance(entries, list):
            raise ValueError(f"{listing}: expected a JSON list of 'shape_data/<synset>/<id>', got "
                             f"{type(entries).__name__}")
        items = []
        for i, entry in enumerate(entries):
            parts = str(entry).split("/")
            if len(parts) < 2 or parts[-2] not in SHAPENET_SYNSETS:
                raise ValueError(f"{listing}: entry {i} {entry!r} names category "
                                 f"{parts[-2] if len(parts) > 1 else '?'!r}, unknown; expected "
                                 f"'shape_data/<synset>/<id>' with a synset of {sorted(SHAPENET_SYNSETS)}")
            items.append((parts[-2], parts[-1]))
        return items

    def path_of(self, item: tuple[str, str]) -> Path:
        return self.release_dir() / item[0] / f"{item[1]}.txt"

    def describe_sample(self, item: tuple[str, str]) -> str:
        return str(self.path_of(item))

    def read_sample(self, item: tuple[str, str]) -> dict:
        path = self.path_of(item)
        if not path.is_file():
            raise FileNotFoundError(f"ShapeNetPart: {path} missing (listed by the split file)")
        try:
            table = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise ValueError(f"{path}: cannot parse ({e}); expected lines 'x y z nx ny nz part'") from None
        if table.shape[1] != 7:
            raise ValueError(f"{path}: {table.shape[1]} columns, expected 7 'x y z nx ny nz part'")
        category = SHAPENET_SYNSETS[item[0]]
        part = table[:, 6]
        allowed = SHAPENET_PARTS[category]
        outside = (part != np.round(part)) | (part < allowed[0]) | (part > allowed[-1])
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise ValueError(f"{path}, line {row + 1}: field 'part' is {part[row]}, expected a part of "
                             f"{SHAPENET_CATEGORIES[category]} ({allowed[0]}..{allowed[-1]})")
        return {"points": table[:, :3].astype(np.float32), "normals": table[:, 3:6].astype(np.float32),
                "label": part.astype(np.int64), "category": category}
