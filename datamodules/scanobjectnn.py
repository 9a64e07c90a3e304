"""ScanObjectNN (Uy et al. 2019), the h5 release: 15 classes of real scanned objects.

``<root>/[h5_files/]<folder>/<prefix>_<suffix>.h5`` with datasets ``data`` float32 [B, 2048, 3],
``label`` [B] and ``mask`` [B, 2048] (per point: object part vs background, kept in the
sample as ``mask``). Variants (the names used in the paper's tables):

| variant          | folder           | file suffix                    |
| ---------------- | ---------------- | ------------------------------ |
| OBJ_BG           | main_split       | objectdataset                  |
| OBJ_ONLY         | main_split_nobg  | objectdataset                  |
| PB_T25           | main_split       | objectdataset_augmented25_norot|
| PB_T25_R         | main_split       | objectdataset_augmented25rot   |
| PB_T50_R         | main_split       | objectdataset_augmentedrot     |
| PB_T50_RS        | main_split       | objectdataset_augmentedrot_scale75 (the hardest) |

A ``_nobg`` suffix on any PB variant reads ``main_split_nobg``. Train files are
``training_<suffix>.h5``, test files ``test_<suffix>.h5``; ``val`` is the test split (the common
practice; the release has no validation split). There is no public download URL (the authors
hand out a link after a terms-of-use form), hence no ``download`` argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from i2p.io import read_h5

from .memory import ArrayDataModule

__all__ = ["SCANOBJECTNN_CLASSES", "VARIANTS", "HOW_TO_GET", "variant_file", "ScanObjectNN"]

SCANOBJECTNN_CLASSES = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
]  # fmt: skip
VARIANTS = {
    "OBJ_BG": "objectdataset",
    "OBJ_ONLY": "objectdataset",
    "PB_T25": "objectdataset_augmented25_norot",
    "PB_T25_R": "objectdataset_augmented25rot",
    "PB_T50_R": "objectdataset_augmentedrot",
    "PB_T50_RS": "objectdataset_augmentedrot_scale75",
}
HOW_TO_GET = ("request access at https://hkust-vgd.github.io/scanobjectnn/ (terms-of-use form), then unzip h5_files "
              "into root")


def variant_file(variant: str, split: str) -> Path:
    """Relative path of a variant's split file, e.g. ``main_split/training_objectdataset.h5``."""
    base = variant[: -len("_nobg")] if variant.endswith("_nobg") else variant
    if base not in VARIANTS:
        raise ValueError(f"unknown ScanObjectNN variant {variant!r}; choose one of {sorted(VARIANTS)} (PB_* also with "
                         f"_nobg)")
    folder = "main_split_nobg" if variant.endswith("_nobg") or base == "OBJ_ONLY" else "main_split"
    prefix = "training" if split == "train" else "test"
    return Path(folder) / f"{prefix}_{VARIANTS[base]}.h5"


class ScanObjectNN(ArrayDataModule):
    """ScanObjectNN h5 variants (default ``PB_T50_RS``, the hardest). ``**kwargs``: VoxelDataModule's."""

    class_names = SCANOBJECTNN_CLASSES

    def __init__(self, root: str = "data/scanobjectnn", variant: str = "PB_T50_RS", **kwargs: Any) -> None:
        variant_file(variant, "train")  # validates the name early
        super().__init__(**kwargs)
        self.root, self.variant = Path(root), variant

    def split_file(self, split: str) -> Path:
        """The h5 file of a split, under ``root`` or ``root/h5_files``."""
        rel = variant_file(self.variant, split)
        candidates = [self.root / rel, self.root / "h5_files" / rel]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"ScanObjectNN {self.variant} ({split}): expected {rel} under {self.root.resolve()} "
            f"(looked at {[str(c) for c in candidates]}); {HOW_TO_GET}"
        )

    def load_split(self, split: str) -> dict:
        path = self.split_file("test" if split == "val" else split)
        raw = read_h5(path, ["data", "label"], optional=["mask"])
        out = {"points": raw["data"], "label": raw["label"], "points_field": "data", "source": str(path)}
        if "mask" in raw:
            out["mask"] = raw["mask"]
        return out
