"""Point-cloud augmentations, each a small callable ``(sample, rng) -> sample``.

A *sample* is the dict a dataset's ``read_sample`` returns: ``points [P, 3]`` plus optional
per-point arrays (``colors``, ``normals``, per-point labels, ...) and a scalar ``label``.
Every array whose first dimension is ``P`` counts as per-point, so transforms that drop points
(dropout, subsampling) keep all of them aligned without knowing their names.

Randomness comes only from the ``numpy.random.Generator`` passed in, never from global state,
so a seeded generator reproduces an augmentation exactly (also inside DataLoader workers).

The paper's ModelNet40 recipe (official Image2Point configs) is ``paper_train_transforms()``:
per-axis scale U(0.9, 1.1) with p 0.9, translation U(-0.2, 0.2) with p 0.9, jitter uniform in
+-0.0125 with p 0.7, no rotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "AXES", "num_points", "select_points", "Compose", "NormalizeUnitSphere", "RandomScale", "RandomTranslate",
    "RandomJitter", "rotation_matrix", "RandomRotateUp", "RandomPointDropout", "RandomSubsample",
    "paper_train_transforms", "PRESETS", "build_transforms",
]

Sample = dict
Transform = Callable[[Sample, np.random.Generator], Sample]

AXES = {"x": 0, "y": 1, "z": 2}


def num_points(sample: Sample) -> int:
    """Number of points of a sample."""
    return int(np.asarray(sample["points"]).shape[0])


def select_points(sample: Sample, keep: np.ndarray) -> Sample:
    """Index every per-point array of ``sample`` with ``keep`` (indices or boolean mask)."""
    n = num_points(sample)
    out = dict(sample)
    for key, value in sample.items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
            out[key] = value[keep]
    return out


class Compose:
    """Apply transforms in order with one shared generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class NormalizeUnitSphere:
    """Centre on the centroid and scale so the farthest point lies on the unit sphere.

    The paper's voxel size 0.05 assumes unit-sphere shapes; deterministic, rng unused. Computed in
    float64 after dividing by the largest coordinate, so a cloud in any unit (1e20 or 1e-20) comes
    out the same: squaring float32 coordinates above ~1e19 overflows and used to collapse the
    whole cloud onto one voxel at the origin.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        pts = np.asarray(sample["points"], dtype=np.float64)
        pts = pts - pts.mean(axis=0, keepdims=True)
        scale = float(np.abs(pts).max()) if len(pts) else 0.0
        if scale > 0:
            pts = pts / scale
            pts = pts / float(np.sqrt((pts**2).sum(axis=1)).max())
        return {**sample, "points": pts.astype(np.float32)}

    def __repr__(self) -> str:
        return "NormalizeUnitSphere()"


class RandomScale:
    """Scale by U(low, high), one factor per axis when ``anisotropic`` (the paper's), with prob. p."""

    def __init__(self, low: float = 0.9, high: float = 1.1, anisotropic: bool = True, p: float = 0.9) -> None:
        if not 0 < low <= high:
            raise ValueError(f"RandomScale needs 0 < low <= high, got low={low}, high={high}")
        self.low, self.high, self.anisotropic, self.p = low, high, anisotropic, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        s = rng.uniform(self.low, self.high, size=3 if self.anisotropic else 1)
        s = np.broadcast_to(s, (3,)).astype(np.float32)
        out = {**sample, "points": (np.asarray(sample["points"]) * s).astype(np.float32)}
        if "normals" in sample:  # normals follow the inverse-transpose, renormalised
            n = np.asarray(sample["normals"]) / s
            out["normals"] = (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomScale(low={self.low}, high={self.high}, anisotropic={self.anisotropic}, p={self.p})"


class RandomTranslate:
    """Shift the whole cloud by U(-shift, shift) per axis with prob. p."""

    def __init__(self, shift: float = 0.2, p: float = 0.9) -> None:
        self.shift, self.p = shift, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        t = rng.uniform(-self.shift, self.shift, size=3).astype(np.float32)
        return {**sample, "points": (np.asarray(sample["points"]) + t).astype(np.float32)}

    def __repr__(self) -> str:
        return f"RandomTranslate(shift={self.shift}, p={self.p})"


class RandomJitter:
    """Per-point noise clipped to [-clip, clip], with prob. p.

    ``dist="uniform"`` draws U(-sigma, sigma) (the official code's jitter, +-0.0125);
    ``dist="normal"`` draws N(0, sigma^2) (PointNet's, usually sigma 0.01, clip 0.05).
    """

    def __init__(self, sigma: float = 0.0125, clip: float = 0.05, dist: str = "uniform", p: float = 0.7) -> None:
        if dist not in ("uniform", "normal"):
            raise ValueError(f"RandomJitter dist must be 'uniform' or 'normal', got {dist!r}")
        if sigma < 0 or clip <= 0:
            raise ValueError(f"RandomJitter needs sigma >= 0 and clip > 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip, self.dist, self.p = sigma, clip, dist, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        pts = np.asarray(sample["points"])
        if self.dist == "uniform":
            noise = rng.uniform(-self.sigma, self.sigma, size=pts.shape)
        else:
            noise = rng.normal(0.0, self.sigma, size=pts.shape)
        noise = np.clip(noise, -self.clip, self.clip)
        return {**sample, "points": (pts + noise).astype(np.float32)}

    def __repr__(self) -> str:
        return f"RandomJitter(sigma={self.sigma}, clip={self.clip}, dist={self.dist!r}, p={self.p})"


def rotation_matrix(axis: str, angle: float) -> np.ndarray:
    """Right-handed rotation by ``angle`` radians about ``axis`` ('x', 'y' or 'z')."""
    c, s = math.cos(angle), math.sin(angle)
    i = AXES[axis]
    j, k = [a for a in range(3) if a != i]
    r = np.eye(3)
    r[j, j], r[j, k], r[k, j], r[k, k] = c, -s, s, c
    if i == 1:  # keep right-handedness for the y axis (z -> x)
        r = r.T
    return r


class RandomRotateUp:
    """Rotate about the up axis by U(-max_angle, max_angle) with prob. p (not in the paper recipe).

    ModelNet40 HDF5 and ScanObjectNN clouds are y-up, hence the default axis.
    """

    def __init__(self, axis: str = "y", max_angle: float = math.pi, p: float = 1.0) -> None:
        if axis not in AXES:
            raise ValueError(f"RandomRotateUp axis must be one of x, y, z, got {axis!r}")
        self.axis, self.max_angle, self.p = axis, max_angle, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        r = rotation_matrix(self.axis, float(rng.uniform(-self.max_angle, self.max_angle))).astype(np.float32)
        out = {**sample, "points": (np.asarray(sample["points"]) @ r.T).astype(np.float32)}
        if "normals" in sample:
            out["normals"] = (np.asarray(sample["normals"]) @ r.T).astype(np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomRotateUp(axis={self.axis!r}, max_angle={self.max_angle}, p={self.p})"


class RandomPointDropout:
    """Drop a random fraction U(0, max_ratio) of the points with prob. p (PointNet++ style).

    Keeps at least one point so a sample never becomes empty.
    """

    def __init__(self, max_ratio: float = 0.875, p: float = 1.0) -> None:
        if not 0 <= max_ratio < 1:
            raise ValueError(f"RandomPointDropout max_ratio must be in [0, 1), got {max_ratio}")
        self.max_ratio, self.p = max_ratio, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        n = num_points(sample)
        drop = rng.random(n) < rng.uniform(0.0, self.max_ratio)
        if drop.all():
            drop[rng.integers(n)] = False
        return select_points(sample, np.flatnonzero(~drop))

    def __repr__(self) -> str:
        return f"RandomPointDropout(max_ratio={self.max_ratio}, p={self.p})"


class RandomSubsample:
    """Keep ``n`` points drawn without replacement when there are more; fewer are kept as they are."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"RandomSubsample n must be >= 1, got {n}")
        self.n = n

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        total = num_points(sample)
        if total <= self.n:
            return sample
        keep = np.sort(rng.choice(total, self.n, replace=False))
        return select_points(sample, keep)

    def __repr__(self) -> str:
        return f"RandomSubsample(n={self.n})"


def paper_train_transforms(rotate: bool = False, up_axis: str = "y") -> Compose:
    """The official Image2Point ModelNet40 augmentation (plus optional rotation about the up axis)."""
    ts: list[Transform] = [RandomScale(0.9, 1.1, anisotropic=True, p=0.9), RandomTranslate(0.2, p=0.9)]
    ts.append(RandomJitter(sigma=0.0125, clip=0.05, dist="uniform", p=0.7))
    if rotate:
        ts.insert(0, RandomRotateUp(axis=up_axis))
    return Compose(ts)


PRESETS = {
    "paper": lambda up: paper_train_transforms(False, up),
    "paper_rotate": lambda up: paper_train_transforms(True, up),
    "none": lambda up: Compose([]),
}


def build_transforms(spec: str | Transform | None, up_axis: str = "y") -> Transform:
    """A preset name (``paper``, ``paper_rotate``, ``none``), a callable, or None (= none)."""
    if spec is None:
        return Compose([])
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown augmentation preset {spec!r}; choose one of {sorted(PRESETS)} or pass a "
                             f"callable")
        return PRESETS[spec](up_axis)
    if not callable(spec):
        raise ValueError(f"augmentation must be a preset name or a callable (sample, rng) -> sample, got {spec!r}")
    return spec
