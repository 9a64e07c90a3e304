"""``SyntheticShapes``: the embedded, generated default data set (``make demo``, tests).

Every shape is a function of ``(data_seed, split, index)`` only, so a seed reproduces the data
exactly, in any order. Labels cycle through the classes (balanced splits). Each shape gets a
random anisotropic scale, a random yaw plus a small tilt, surface noise and, with probability
``partial_prob``, a partial view (the far side along a random direction cut away). Points are
sampled on the surface with open3d (seeded). Generated once per process (and optionally
cached on disk as .npz) so an epoch costs only voxelisation.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2p.io import atomic_save_npz, sample_surface

from .memory import ArrayDataModule
from .shapes import SHAPES
from .transforms import rotation_matrix

__all__ = ["SPLIT_IDS", "Z_UP_TO_Y_UP", "generate_shape", "generate_split", "SyntheticShapes"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # (x, y, z) -> (x, z, -y)
_MEMORY: dict[tuple, dict] = {}


def generate_shape(
    label: int, classes: Sequence[str], rng: np.random.Generator, num_points: int,
    partial_prob: float, noise: float, max_tilt_deg: float, anisotropy: float,
) -> np.ndarray:
    """One shape of class ``classes[label]`` as float32 [num_points, 3], y-up, in the unit sphere."""
    verts, tris = SHAPES[classes[label]](rng)
    verts = verts * rng.uniform(1 - anisotropy, 1 + anisotropy, 3)
    tilt_axis = rng.uniform(0, 2 * math.pi)
    tilt = np.radians(rng.uniform(0, max_tilt_deg))
    yaw = rng.uniform(0, 2 * math.pi)
    pose = rotation_matrix("z", tilt_axis) @ rotation_matrix("x", tilt) @ rotation_matrix("z", yaw)
    verts = verts @ (Z_UP_TO_Y_UP @ pose).T
    keep = rng.uniform(0.5, 0.8) if rng.random() < partial_prob else 1.0
    pts = sample_surface(verts, tris, math.ceil(num_points / keep * 1.05), seed=int(rng.integers(2**31)))
    if keep < 1.0:
        direction = rng.normal(size=3)
        proj = pts @ (direction / np.linalg.norm(direction))
        pts = pts[proj <= np.quantile(proj, keep)]
    pts = pts[np.sort(rng.choice(len(pts), num_points, replace=False))]
    pts = pts + rng.normal(0.0, noise, pts.shape)
    pts = pts - pts.mean(axis=0)
    return (pts / np.linalg.norm(pts, axis=1).max()).astype(np.float32)


def generate_split(
    n: int, split: str, data_seed: int, classes: Sequence[str], num_points: int = 2048,
    partial_prob: float = 0.3, noise: float = 0.01, max_tilt_deg: float = 20.0, anisotropy: float = 0.15,
) -> dict[str, np.ndarray]:
    """``n`` shapes, labels ``i % len(classes)``: dict(points [n, P, 3] float32, label [n] int64)."""
    labels = np.arange(n, dtype=np.int64) % len(classes)
    points = np.empty((n, num_points, 3), np.float32)
    for i in range(n):
        rng = np.random.default_rng([data_seed, SPLIT_IDS[split], i])
        points[i] = generate_shape(int(labels[i]), classes, rng, num_points, partial_prob, noise, max_tilt_deg,
                                   anisotropy)
    return {"points": points, "label": labels}


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """A cached split, or None (with a warning) when the file is unreadable: it is then regenerated."""
    try:
        with np.load(path) as z:
            return {"points": z["points"], "label": z["label"]}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        warnings.warn(f"{path}: unreadable cache (truncated or corrupt: {type(e).__name__}: {e}); regenerating it",
                      stacklevel=3)
        return None


class SyntheticShapes(ArrayDataModule):
    """Generated shapes in ``len(classes)`` classes (12 by default), seeded by ``data_seed``.

    Args:
        num_train / num_val / num_test: shapes per split (balanced: labels cycle through classes).
        points_per_shape: surface points per shape.
        data_seed: the data (``seed`` still drives augmentation and subsets).
        partial_prob: probability of a partial view (30-50 % of the surface cut away).
        noise: std of Gaussian surface noise (unit-sphere units).
        max_tilt_deg: tilt away from upright (yaw is always uniform).
        anisotropy: per-axis scale U(1 - a, 1 + a) applied to every shape.
        classes: a subset of ``shapes.SHAPES`` names (default: all).
        cache_dir: if set, generated splits are stored there as .npz and reused.
        **kwargs: ``VoxelDataModule`` arguments (voxel_size, num_points, batch_size, few_shot, ...).
    """

    def __init__(
        self,
        num_train: int = 600,
        num_val: int = 240,
        num_test: int = 240,
        points_per_shape: int = 2048,
        data_seed: int = 0,
        partial_prob: float = 0.3,
        noise: float = 0.01,
        max_tilt_deg: float = 20.0,
        anisotropy: float = 0.15,
        classes: Sequence[str] | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        classes = list(SHAPES) if classes is None else list(classes)
        unknown = [c for c in classes if c not in SHAPES]
        if unknown or len(classes) < 2:
            raise ValueError(f"classes {unknown or classes}: choose at least two of {list(SHAPES)}")
        if kwargs.get("class_names") not in (None, classes):
            raise ValueError("SyntheticShapes takes its class table from `classes`; do not pass class_names")
        super().__init__(**kwargs)
        self.class_names = classes
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        if min(self.sizes.values()) < 1:
            raise ValueError(f"num_train/num_val/num_test must be >= 1, got {self.sizes}")
        self.gen_kwargs = dict(
            num_points=points_per_shape, partial_prob=partial_prob, noise=noise,
            max_tilt_deg=max_tilt_deg, anisotropy=anisotropy,
        )
        self.data_seed, self.shape_classes, self.cache_dir = data_seed, classes, cache_dir
        self.generation_seconds = 0.0

    def _key(self, split: str) -> tuple:
        return (split, self.sizes[split], self.data_seed, tuple(self.shape_classes),
                tuple(sorted(self.gen_kwargs.items())))

    def load_split(self, split: str) -> dict:
        key = self._key(split)
        if key not in _MEMORY:
            path = None
            if self.cache_dir is not None:
                digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
                path = Path(self.cache_dir) / f"synthetic_{split}_{digest}.npz"
            cached = _read_cache(path) if path is not None and path.is_file() else None
            if cached is not None:
                _MEMORY[key] = cached
            else:
                start = time.perf_counter()
                _MEMORY[key] = generate_split(self.sizes[split], split, self.data_seed, self.shape_classes,
                                              **self.gen_kwargs)
                self.generation_seconds += time.perf_counter() - start
                if path is not None:
                    atomic_save_npz(path, **_MEMORY[key])
        return {**_MEMORY[key], "source": f"SyntheticShapes(data_seed={self.data_seed}):{split}"}
