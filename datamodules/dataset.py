"""The generic voxelising dataset and the collate function every VoxelDataModule uses.

``PointCloudDataset`` turns items (whatever ``list_samples`` returned) into voxelised samples:
read -> check -> subsample -> normalise -> augment -> ``sparse_quantize`` -> features.
``collate_voxels`` batches them into the dict of ``docs/conventions.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from i2p.io import check_points

from .sampling import Draw
from .transforms import NormalizeUnitSphere, RandomSubsample, Transform, num_points

__all__ = [
    "FEATURE_CHANNELS", "VOXEL_LIMIT", "parse_features", "feature_channels", "single_thread", "draw_key",
    "PointCloudDataset", "voxelize_sample", "collate_voxels",
]

FEATURE_CHANNELS = {"xyz": 3, "ones": 1, "rgb": 3, "normal": 3}
#: the largest |coordinate| / voxel_size a sample may reach (int32 voxel indices, with headroom)
VOXEL_LIMIT = 2**30


def parse_features(spec: str) -> list[str]:
    """``"xyz"``, ``"ones"``, ``"xyz+rgb"``, ``"xyz+normal"``, ... -> list of parts (validated)."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    bad = [p for p in parts if p not in FEATURE_CHANNELS]
    if not parts or bad:
        raise ValueError(f"features {spec!r}: unknown part(s) {bad}; use '+'-joined parts of "
                         f"{sorted(FEATURE_CHANNELS)}")
    return parts


def feature_channels(spec: str) -> int:
    """Number of voxel feature channels a features spec produces."""
    return sum(FEATURE_CHANNELS[p] for p in parse_features(spec))


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread: voxelising one small cloud is 3-5x slower with
    several threads on a busy CPU (measured), and DataLoader workers use one thread anyway.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class PointCloudDataset(Dataset):
    """Items -> voxelised samples.

    Every sample's randomness comes from a generator seeded by what identifies the draw, so a
    sample looks the same whatever worker or rank loads it and however many batches were
    prefetched (what makes a killed fit resume exactly): ``(seed, index)`` for evaluation
    (``deterministic=True``), ``(seed, epoch, index)`` for training, where the training sampler
    (``sampling.EpochSampler``) yields ``Draw(index, epoch)`` keys; a plain integer key is epoch 0.
    """

    def __init__(
        self,
        items: Sequence[Any],
        read: Callable[[Any], dict],
        describe: Callable[[Any], str] = repr,
        transform: Transform | None = None,
        voxel_size: float = 0.05,
        num_points: int | None = 2048,
        features: str = "xyz",
        normalize: bool = True,
        num_classes: int | None = None,
        deterministic: bool = False,
        seed: int = 0,
    ) -> None:
        self.items = list(items)
        self.read, self.describe, self.transform = read, describe, transform
        self.voxel_size, self.features, self.num_classes = voxel_size, parse_features(features), num_classes
        self.subsample = RandomSubsample(num_points) if num_points else None
        self.normalize = NormalizeUnitSphere() if normalize else None
        self.deterministic, self.seed = deterministic, seed

    def __len__(self) -> int:
        return len(self.items)

    def generator(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The generator of one draw of sample ``index`` (see the class docstring)."""
        if self.deterministic:
            return np.random.default_rng([self.seed, index])
        return np.random.default_rng([self.seed, epoch, index, 0x5EED])

    def check(self, sample: dict, item: Any) -> dict:
        """Validate a freshly read sample; errors name the item (file) and the field."""
        where = self.describe(item)
        if not isinstance(sample, dict) or "points" not in sample or "label" not in sample:
            raise ValueError(f"{where}: read_sample must return a dict with 'points' and 'label'")
        pts = check_points(sample["points"], where)
        if len(pts) > 1 and not np.any(pts != pts[0]):
            raise ValueError(f"{where}: field 'points' has all {len(pts)} points at {pts[0].tolist()}, expected a "
                             "cloud with some extent")
        out = {**sample, "points": pts}
        label = np.asarray(sample["label"])
        if label.ndim > 0 and label.shape != (len(pts),):
            if label.size == 1:
                label = label.reshape(())
            else:
                raise ValueError(f"{where}: field 'label' has shape {label.shape}, expected a scalar or [{len(pts)}]")
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{where}: field 'label' has dtype {label.dtype}, expected integer class ids")
        if self.num_classes is not None and label.size and (label.min() < 0 or label.max() >= self.num_classes):
            raise ValueError(f"{where}: field 'label' holds {label.min()}..{label.max()}, expected in [0, "
                             f"{self.num_classes})")
        out["label"] = label.astype(np.int64)
        for key in ("colors", "normals"):
            if key in sample and np.asarray(sample[key]).shape != pts.shape:
                raise ValueError(f"{where}: field '{key}' has shape {np.asarray(sample[key]).shape}, expected "
                                 f"{pts.shape}")
        return out

    def _check_grid(self, pts: np.ndarray, item: Any) -> None:
        """Voxel indices are int32 (with headroom for kernel offsets and strides): refuse clouds whose
        extent in voxels does not fit, instead of wrapping them around into garbage.
        """
        extent = float(np.abs(pts).max()) / self.voxel_size if len(pts) else 0.0
        if extent >= VOXEL_LIMIT:
            raise ValueError(f"{self.describe(item)}: field 'points' reaches |x| = {extent * self.voxel_size:.3g}, "
                             f"{extent:.3g} voxels of size {self.voxel_size}, beyond the voxel grid (2^30 per axis); "
                             "expected normalised clouds (normalize=True) or a voxel_size in the data's units")

    def prepare(self, index: int, epoch: int = 0) -> dict:
        """Read, check, subsample, normalise and augment sample ``index`` (no voxelisation)."""
        item = self.items[index]
        sample = self.check(self.read(item), item)
        rng = self.generator(index, epoch)
        if self.subsample is not None:
            sample = self.subsample(sample, rng)
        if self.normalize is not None:
            sample = self.normalize(sample, rng)
        if self.transform is not None:
            sample = self.transform(sample, rng)
            if num_points(sample) == 0:
                raise ValueError(f"{self.describe(item)}: transforms left no points")
        return sample

    def __getitem__(self, key: int | Draw) -> dict:
        index, epoch = draw_key(key)
        sample = self.prepare(index, epoch)
        self._check_grid(np.asarray(sample["points"], dtype=np.float32), self.items[index])
        return voxelize_sample(sample, index, self.voxel_size, self.features, self.describe(self.items[index]))


def draw_key(key: int | Draw) -> tuple[int, int]:
    """(index, epoch) of a dataset key: a plain index (evaluation: epoch 0) or the training sampler's ``Draw``."""
    return (key.index, key.epoch) if isinstance(key, tuple) else (int(key), 0)


def voxelize_sample(sample: dict, index: int, voxel_size: float, features: Sequence[str], where: str) -> dict:
    """A prepared sample (points and per-point fields) -> the voxelised sample ``collate_voxels`` takes:
    ``sparse_quantize`` coords, the features of each voxel's representative point, the point-to-voxel map.
    """
    from i2p.sparse import sparse_quantize

    pts = np.ascontiguousarray(sample["points"], dtype=np.float32)
    feats = []
    for part in features:
        if part == "xyz":
            feats.append(pts)
        elif part == "ones":
            feats.append(np.ones((len(pts), 1), np.float32))
        else:
            key = {"rgb": "colors", "normal": "normals"}[part]
            if key not in sample:
                raise ValueError(f"{where}: features '{part}' need field '{key}', which the sample lacks")
            feats.append(np.asarray(sample[key], np.float32))
    point_feats = np.concatenate(feats, axis=1)
    with single_thread():
        coords, rep, inverse = sparse_quantize(torch.from_numpy(pts), voxel_size)
        return {
            "coords": coords,
            "feats": torch.from_numpy(point_feats[rep.numpy()]),
            "label": torch.as_tensor(sample["label"], dtype=torch.long),
            "index": index,
            "inverse": inverse.long(),
            "points": torch.from_numpy(pts),
        }


def collate_voxels(samples: list[dict]) -> dict:
    """Voxelised samples -> the batch dict of docs/conventions.md (x, label, index, inverse, point_offsets, points)."""
    from i2p.sparse import sparse_collate

    x, voxel_offsets = sparse_collate([(s["coords"], s["feats"]) for s in samples])
    inverse = torch.cat([s["inverse"] + voxel_offsets[b] for b, s in enumerate(samples)])
    counts = torch.tensor([len(s["inverse"]) for s in samples], dtype=torch.long)
    point_offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    labels = [s["label"] for s in samples]
    label = torch.stack(labels) if labels[0].dim() == 0 else torch.cat(labels)
    return {
        "x": x,
        "label": label,
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "inverse": inverse,
        "point_offsets": point_offsets,
        "points": torch.cat([s["points"] for s in samples]),
    }
