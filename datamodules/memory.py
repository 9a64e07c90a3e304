"""``ArrayDataModule``: a VoxelDataModule whose splits are arrays held in memory.

HDF5 releases (ModelNet40, ScanObjectNN), the cached raw-mesh samples and the synthetic shapes
all load a split as ``points [N, P, 3]`` plus ``label [N]``; a subclass only writes
``load_split``. Arrays are validated once, on load, with errors naming the file and field.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import VoxelDataModule

__all__ = ["validate_split", "ArrayDataModule"]


def validate_split(arrays: dict, source: str, num_classes: int | None) -> dict:
    """Check ``points [N, P, 3]`` (finite, P > 0), ``label [N]`` / ``[N, 1]`` in range, per-point
    ``mask [N, P]``; return them with label as int64 [N]. Errors name ``source`` and the field.
    """
    for field in ("points", "label"):
        if field not in arrays:
            raise ValueError(f"{source}: field '{field}' missing")
    pts, label = np.asarray(arrays["points"]), np.asarray(arrays["label"])
    name = arrays.get("points_field", "points")
    lname = arrays.get("label_field", "label")
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise ValueError(f"{source}: field '{name}' has shape {pts.shape}, expected [N, P, 3]")
    if pts.shape[0] == 0:
        raise ValueError(f"{source}: field '{name}' holds no samples, expected [N, P, 3] with N > 0")
    if pts.shape[1] == 0:
        raise ValueError(f"{source}: field '{name}' has empty point clouds (P = 0), expected [N, P, 3] with P > 0")
    if not np.issubdtype(pts.dtype, np.floating):
        raise ValueError(f"{source}: field '{name}' has dtype {pts.dtype}, expected floating point")
    finite = np.isfinite(pts).all(axis=(1, 2))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{source}: field '{name}' has NaN/Inf coordinates in {len(bad)} sample(s), first sample "
                         f"{bad[0]}; expected finite values")
    shape = label.shape
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or label.shape[0] != pts.shape[0]:
        n = pts.shape[0]
        raise ValueError(f"{source}: field '{lname}' has shape {shape}, expected [{n}] or [{n}, 1]")
    if not np.issubdtype(label.dtype, np.integer):
        if not (np.issubdtype(label.dtype, np.floating) and np.all(np.mod(label, 1) == 0)):
            raise ValueError(f"{source}: field '{lname}' has dtype {label.dtype}, expected integer class ids")
    label = label.astype(np.int64)
    if num_classes is not None and (label.min() < 0 or label.max() >= num_classes):
        bad = int(np.flatnonzero((label < 0) | (label >= num_classes))[0])
        raise ValueError(f"{source}: field '{lname}' value {label[bad]} at sample {bad} out of range, expected labels "
                         f"in [0, {num_classes})")
    out = {**arrays, "points": pts.astype(np.float32, copy=False), "label": label}
    if "mask" in arrays and np.asarray(arrays["mask"]).shape != pts.shape[:2]:
        raise ValueError(f"{source}: field 'mask' has shape {np.asarray(arrays['mask']).shape}, expected "
                         f"{pts.shape[:2]} (one value per point)")
    if "normals" in arrays and np.asarray(arrays["normals"]).shape != pts.shape:
        raise ValueError(f"{source}: field 'normals' has shape {np.asarray(arrays['normals']).shape}, expected "
                         f"{pts.shape}")
    return out


class ArrayDataModule(VoxelDataModule):
    """Splits as in-memory arrays; subclasses implement ``load_split(split)``.

    ``load_split`` returns dict(points [N, P, 3], label [N], source: str naming the file(s),
    optional per-point ``mask [N, P]`` and ``normals [N, P, 3]``); items are ``(split, i)``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._arrays: dict[str, dict] = {}

    def load_split(self, split: str) -> dict:
        """Load one split's arrays (called once per split)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_split(split)")

    def arrays(self, split: str) -> dict:
        """The validated arrays of a split, loaded once."""
        if split not in self._arrays:
            raw = self.load_split(split)
            self._arrays[split] = validate_split(raw, str(raw.get("source", f"{type(self).__name__}:{split}")),
                                                 self.dataset_num_classes)
        return self._arrays[split]

    def list_samples(self, split: str) -> list:
        return [(split, i) for i in range(len(self.arrays(split)["label"]))]

    def read_sample(self, item: tuple[str, int]) -> dict:
        split, i = item
        a = self.arrays(split)
        sample = {"points": a["points"][i], "label": int(a["label"][i])}
        for key in ("mask", "normals"):
            if key in a:
                sample[key] = np.asarray(a[key][i])
        return sample

    def sample_label(self, item: tuple[str, int]) -> int:
        return int(self.arrays(item[0])["label"][item[1]])

    def describe_sample(self, item: tuple[str, int]) -> str:
        split, i = item
        source = self._arrays.get(split, {}).get("source", f"{type(self).__name__}:{split}")
        return f"{source} sample {i}"
