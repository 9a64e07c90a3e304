"""``SegmentationDataModule``: the ``VoxelDataModule`` of per-point labels (scenes, part shapes).

What differs from classification (docs/segmentation.md):

- every point is kept by default (``num_points=None``, no unit-sphere normalisation), because
  validation and test score **every original point** through the inverse map;
- labels are per point ``[P]``; ``ignore_index`` marks points that never count (unlabelled,
  or a test split without labels);
- training may cap the voxels of a sample (``max_voxels``: a random subset of voxels and their
  points, as the official SemanticKITTI loader); evaluation never drops a point;
- more voxel feature parts: ``voxel_xyz`` (voxel coordinates centred on the sample's mean, in
  voxel units: the official S3DIS feature), ``rgb_centred`` (rgb in [0, 1] minus 0.5, the official
  S3DIS colour feature) and ``remission`` (lidar intensity), besides ``xyz``, ``ones``, ``rgb``, ``normal``;
- the batch adds ``voxel_size`` (for trilinear devoxelisation) and, for part segmentation,
  ``category [B]`` (one category per shape);
- a ``predict`` split (by default the test split), e.g. SemanticKITTI's unlabelled sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from i2p.io import check_points

from .base import SPLITS, VoxelDataModule
from .dataset import FEATURE_CHANNELS, PointCloudDataset, collate_voxels, draw_key, single_thread
from .sampling import Draw

__all__ = ["IGNORE_INDEX", "SEG_FEATURE_CHANNELS", "seg_feature_parts", "SegmentationDataset",
           "collate_segmentation", "SegmentationDataModule"]

IGNORE_INDEX = -100  # torch's cross-entropy default; PointSegmenter's default ignore_index
SEG_FEATURE_CHANNELS = {**FEATURE_CHANNELS, "voxel_xyz": 3, "rgb_centred": 3, "remission": 1}


def seg_feature_parts(spec: str) -> list[str]:
    """``"voxel_xyz+rgb_centred"`` ... -> its parts (validated against ``SEG_FEATURE_CHANNELS``)."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    bad = [p for p in parts if p not in SEG_FEATURE_CHANNELS]
    if not parts or bad:
        raise ValueError(f"features {spec!r}: unknown part(s) {bad}; use '+'-joined parts of "
                         f"{sorted(SEG_FEATURE_CHANNELS)}")
    return parts


class SegmentationDataset(PointCloudDataset):
    """Items -> voxelised samples with per-point labels (``PointCloudDataset`` plus the above)."""

    def __init__(self, items: Sequence[Any], read: Callable[[Any], dict], *, features: str = "xyz",
                 ignore_index: int = IGNORE_INDEX, max_voxels: int | None = None, **kwargs: Any) -> None:
        super().__init__(items, read, features="xyz", **kwargs)
        self.features = seg_feature_parts(features)
        self.ignore_index, self.max_voxels = ignore_index, max_voxels

    def check(self, sample: dict, item: Any) -> dict:
        """Per-point labels in ``[0, num_classes)`` or ``ignore_index``; errors name the item and field."""
        where = self.describe(item)
        if not isinstance(sample, dict) or "points" not in sample:
            raise ValueError(f"{where}: read_sample must return a dict with 'points' (and per-point 'label')")
        pts = check_points(sample["points"], where)
        label = np.asarray(sample.get("label", np.full(len(pts), self.ignore_index)))
        if label.shape != (len(pts),):
            raise ValueError(f"{where}: field 'label' has shape {label.shape}, expected per-point labels [{len(pts)}]")
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{where}: field 'label' has dtype {label.dtype}, expected integer class ids")
        label = label.astype(np.int64)
        valid = label != self.ignore_index
        if self.num_classes is not None and valid.any():
            bad = valid & ((label < 0) | (label >= self.num_classes))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{where}: field 'label' holds {label[i]} at point {i}, expected [0, "
                                 f"{self.num_classes}) or ignore_index {self.ignore_index}")
        out = {**sample, "points": pts, "label": label}
        for key, width in (("colors", 3), ("normals", 3), ("remission", 1)):
            if key in sample:
                value = np.asarray(sample[key], np.float32)
                value = value.reshape(len(pts), -1) if value.size == len(pts) * width else value
                if value.shape != (len(pts), width):
                    raise ValueError(f"{where}: field '{key}' has shape {np.asarray(sample[key]).shape}, expected "
                                     f"[{len(pts)}, {width}]" + (f" or [{len(pts)}]" if width == 1 else ""))
                out[key] = value
        return out

    def _feature(self, part: str, sample: dict, pts: np.ndarray, coords: np.ndarray, rep: np.ndarray) -> np.ndarray:
        """Voxel features of one part, ``[M, c]`` (voxel values at the representative points)."""
        if part == "xyz":
            return pts[rep]
        if part == "ones":
            return np.ones((len(rep), 1), np.float32)
        if part == "voxel_xyz":
            c = coords.astype(np.float32)
            return c - c.mean(0, keepdims=True)
        key = {"rgb": "colors", "rgb_centred": "colors", "normal": "normals", "remission": "remission"}[part]
        if key not in sample:
            raise ValueError(f"features '{part}' need field '{key}', which the sample lacks")
        value = np.asarray(sample[key], np.float32)[rep]
        return value - 0.5 if part == "rgb_centred" else value

    def _cap(self, coords: torch.Tensor, rep: torch.Tensor, inverse: torch.Tensor, sample: dict,
             rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Keep a random ``max_voxels`` subset of the voxels and only their points (training)."""
        from .transforms import select_points

        keep = np.sort(rng.choice(len(coords), self.max_voxels, replace=False))
        new_id = np.full(len(coords), -1, np.int64)
        new_id[keep] = np.arange(len(keep))
        point_voxel = new_id[inverse.numpy()]
        kept_points = np.flatnonzero(point_voxel >= 0)
        sample = select_points(sample, kept_points)
        old_to_new_point = np.full(len(point_voxel), -1, np.int64)
        old_to_new_point[kept_points] = np.arange(len(kept_points))
        rep = torch.from_numpy(old_to_new_point[rep.numpy()[keep]])
        return coords[keep], rep, torch.from_numpy(point_voxel[kept_points]), sample

    def __getitem__(self, key: int | Draw) -> dict:
        from i2p.sparse import sparse_quantize

        index, epoch = draw_key(key)
        sample = self.prepare(index, epoch)
        pts = np.ascontiguousarray(sample["points"], dtype=np.float32)
        with single_thread():
            coords, rep, inverse = sparse_quantize(torch.from_numpy(pts), self.voxel_size)
        if self.max_voxels is not None and not self.deterministic and len(coords) > self.max_voxels:
            rng = self.generator(index, epoch).spawn(1)[0]  # a stream of its own, beside the augmentation's
            coords, rep, inverse, sample = self._cap(coords, rep, inverse, sample, rng)
            pts = np.ascontiguousarray(sample["points"], dtype=np.float32)
        rep_np = rep.numpy()
        try:
            feats = np.concatenate([self._feature(p, sample, pts, coords.numpy(), rep_np) for p in self.features], 1)
        except ValueError as e:
            raise ValueError(f"{self.describe(self.items[index])}: {e}") from None
        out = {
            "coords": coords,
            "feats": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
            "label": torch.as_tensor(sample["label"], dtype=torch.long),
            "index": index,
            "inverse": inverse.long(),
            "points": torch.from_numpy(pts),
            "voxel_size": float(self.voxel_size),
        }
        if "category" in sample:
            out["category"] = int(sample["category"])
        return out


def collate_segmentation(samples: list[dict]) -> dict:
    """``collate_voxels`` plus ``voxel_size`` (a float) and, when the samples have one, ``category [B]``."""
    batch = collate_voxels(samples)
    batch["voxel_size"] = samples[0]["voxel_size"]
    if "category" in samples[0]:
        batch["category"] = torch.tensor([s["category"] for s in samples], dtype=torch.long)
    return batch


class SegmentationDataModule(VoxelDataModule):
    """Per-point-label data sets; subclasses implement ``list_samples`` / ``read_sample`` as usual
    (``read_sample`` returns ``points``, per-point ``label`` and optional ``colors`` in [0, 1],
    ``normals``, ``remission``, ``category``).

    Args:
        features: voxel feature parts (see the module docstring), e.g. ``voxel_xyz+rgb_centred``.
        ignore_index: the label of points that never count (the segmenter's ``ignore_index``).
        max_voxels: cap on the voxels of a training sample (None: no cap); evaluation keeps all.
        **kwargs: ``VoxelDataModule`` arguments (voxel_size, batch_size, augmentation, ...);
            ``num_points`` defaults to None and ``normalize`` to False here.
    """

    #: category id -> its part ids, for part segmentation (None otherwise)
    category_parts: list[list[int]] | None = None
    collate = staticmethod(collate_segmentation)
    dataset_class = SegmentationDataset

    def __init__(self, features: str = "xyz", ignore_index: int = IGNORE_INDEX, max_voxels: int | None = None,
                 num_points: int | None = None, normalize: bool = False, augmentation: str | Callable | None = "none",
                 **kwargs: Any) -> None:
        if kwargs.get("few_shot") is not None or kwargs.get("train_fraction") is not None:
            raise ValueError(f"{type(self).__name__}: few_shot / train_fraction subsets are per class of a sample; "
                             "segmentation samples have no single class")
        super().__init__(features="xyz", num_points=num_points, normalize=normalize, augmentation=augmentation,
                         **kwargs)
        self.features = features
        self.in_channels = sum(SEG_FEATURE_CHANNELS[p] for p in seg_feature_parts(features))
        if max_voxels is not None and max_voxels < 1:
            raise ValueError(f"max_voxels must be >= 1 or None, got {max_voxels}")
        self.ignore_index, self.max_voxels = ignore_index, max_voxels

    @property
    def num_categories(self) -> int:
        return 0 if self.category_parts is None else len(self.category_parts)

    def items(self, split: str) -> list:
        if split != "predict":
            return super().items(split)
        if "predict" not in self._items:
            self._items["predict"] = self.list_predict_samples()
            if not self._items["predict"]:
                raise ValueError(f"{type(self).__name__}: split 'predict' is empty")
        return self._items["predict"]

    def list_predict_samples(self) -> list:
        """Items of the ``predict`` split; the test split unless a data set says otherwise."""
        return list(self.list_samples("test"))

    def dataset_options(self) -> dict[str, Any]:
        # read_sample as it is: per-point labels are never remapped to episode classes
        return {"read": self.read_sample, "ignore_index": self.ignore_index, "max_voxels": self.max_voxels}

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in splits.get(stage or "", SPLITS):
            self.dataset(split)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict")
