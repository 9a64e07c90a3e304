"""Point-cloud augmentations, each a small callable ``(sample, rng) -> sample``.

A *sample* is the dict a dataset's ``read_sample`` returns: ``points [P, 3]`` plus optional
per-point arrays (``colors``, ``normals``, per-point labels, ...) and a scalar ``label``.
Every array whose first dimension is ``P`` counts as per-point, so transforms that drop points
(dropout, subsampling) keep all of them aligned without knowing their names.

Randomness comes only from the ``numpy.random.Generator`` passed in, never from global state,
so a seeded generator reproduces an augmentation exactly (also inside DataLoader workers).

The paper's ModelNet40 recipe (official Image2Point configs) is ``paper_train_transforms()``:
per-axis scale U(0.9, 1.1) with p 0.9, translation U(-0.2, 0.2) with p 0.9, jitter uniform in
+-0.0125 with p 0.7, no rotation. The segmentation presets (``s3dis``, ``semantic_kitti``) are the
official code's scene augmentations (docs/segmentation.md); colours are rgb in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "AXES", "num_points", "select_points", "Compose", "NormalizeUnitSphere", "RandomScale", "RandomTranslate",
    "RandomJitter", "rotation_matrix", "RandomRotateUp", "RandomPointDropout", "RandomSubsample",
    "paper_train_transforms", "vote_transforms", "PRESETS", "build_transforms",
    "CropCube", "RandomFlip", "ChromaticJitter", "ChromaticTranslation", "ChromaticAutoContrast",
    "s3dis_train_transforms", "kitti_train_transforms",
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


def vote_transforms(rotate: bool = False, up_axis: str = "y") -> Compose:
    """Test-time voting views: per-axis scale U(0.9, 1.1) always (the recipe's training range), and
    with ``rotate`` a rotation about the up axis (for models trained with ``paper_rotate``).
    """
    ts: list[Transform] = [RandomScale(0.9, 1.1, anisotropic=True, p=1.0)]
    if rotate:
        ts.insert(0, RandomRotateUp(axis=up_axis))
    return Compose(ts)


PRESETS = {
    "paper": lambda up: paper_train_transforms(False, up),
    "paper_rotate": lambda up: paper_train_transforms(True, up),
    "vote": lambda up: vote_transforms(False, up),
    "vote_rotate": lambda up: vote_transforms(True, up),
    "none": lambda up: Compose([]),
    "s3dis": lambda up: s3dis_train_transforms(),  # segmentation presets: defined below
    "semantic_kitti": lambda up: kitti_train_transforms(),
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


# ----------------------------------------------------------------------------- segmentation (scenes)
class CropCube:
    """Keep the points inside an axis-aligned cube of edge ``size`` when the cloud is larger.

    ``centre="bbox"`` (the official S3DIS crop: 8 m around the bounding-box centre, only when some
    extent exceeds it) or ``"random"`` (around a random point, a different window each epoch). A
    crop that would leave no point is re-centred on a random point.
    """

    def __init__(self, size: float = 8.0, centre: str = "bbox", p: float = 1.0) -> None:
        if size <= 0:
            raise ValueError(f"CropCube size must be > 0, got {size}")
        if centre not in ("bbox", "random"):
            raise ValueError(f"CropCube centre must be 'bbox' or 'random', got {centre!r}")
        self.size, self.centre, self.p = size, centre, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        pts = np.asarray(sample["points"])
        lo, hi = pts.min(0), pts.max(0)
        if (hi - lo).max() <= self.size or rng.random() >= self.p:
            return sample
        centre = (lo + hi) / 2 if self.centre == "bbox" else pts[rng.integers(len(pts))]
        keep = np.all(np.abs(pts - centre) <= self.size / 2, axis=1)
        if not keep.any():
            keep = np.all(np.abs(pts - pts[rng.integers(len(pts))]) <= self.size / 2, axis=1)
        return select_points(sample, np.flatnonzero(keep))

    def __repr__(self) -> str:
        return f"CropCube(size={self.size}, centre={self.centre!r}, p={self.p})"


class RandomFlip:
    """With prob. ``p``, mirror each of ``axes`` with prob. ``p_axis`` (``c -> max - c``, the official
    S3DIS horizontal flip); normals follow.
    """

    def __init__(self, axes: Sequence[str] = ("x", "y"), p: float = 0.95, p_axis: float = 0.5) -> None:
        bad = [a for a in axes if a not in AXES]
        if bad:
            raise ValueError(f"RandomFlip axes must be among x, y, z, got {bad}")
        self.axes, self.p, self.p_axis = tuple(axes), p, p_axis

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        pts = np.array(sample["points"], dtype=np.float32)
        normals = np.array(sample["normals"], dtype=np.float32) if "normals" in sample else None
        for axis in self.axes:
            if rng.random() < self.p_axis:
                i = AXES[axis]
                pts[:, i] = pts[:, i].max() - pts[:, i]
                if normals is not None:
                    normals[:, i] = -normals[:, i]
        out = {**sample, "points": pts}
        if normals is not None:
            out["normals"] = normals
        return out

    def __repr__(self) -> str:
        return f"RandomFlip(axes={self.axes}, p={self.p}, p_axis={self.p_axis})"


def _colors(sample: Sample, who: str) -> np.ndarray:
    if "colors" not in sample:
        raise ValueError(f"{who} needs the sample's 'colors' (rgb in [0, 1])")
    return np.asarray(sample["colors"], dtype=np.float32)


class ChromaticJitter:
    """Per-point colour noise N(0, std^2) on rgb in [0, 1], clipped, with prob. p (official: std 0.005)."""

    def __init__(self, std: float = 0.005, p: float = 0.95) -> None:
        self.std, self.p = std, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        c = _colors(sample, "ChromaticJitter")
        return {**sample, "colors": np.clip(c + rng.normal(0.0, self.std, c.shape), 0, 1).astype(np.float32)}

    def __repr__(self) -> str:
        return f"ChromaticJitter(std={self.std}, p={self.p})"


class ChromaticTranslation:
    """One colour shift U(-ratio, ratio) per channel for the whole cloud, clipped, with prob. p (official: 0.05)."""

    def __init__(self, ratio: float = 0.05, p: float = 0.95) -> None:
        self.ratio, self.p = ratio, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        c = _colors(sample, "ChromaticTranslation")
        shift = (rng.random((1, 3)) - 0.5) * 2 * self.ratio
        return {**sample, "colors": np.clip(c + shift, 0, 1).astype(np.float32)}

    def __repr__(self) -> str:
        return f"ChromaticTranslation(ratio={self.ratio}, p={self.p})"


class ChromaticAutoContrast:
    """Stretch each channel to [0, 1] and blend with the original (factor ``blend``), with prob. p
    (official: p 0.2, blend 0.5).
    """

    def __init__(self, blend: float = 0.5, p: float = 0.2) -> None:
        self.blend, self.p = blend, p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        c = _colors(sample, "ChromaticAutoContrast")
        lo, hi = c.min(0, keepdims=True), c.max(0, keepdims=True)
        stretched = (c - lo) / np.maximum(hi - lo, 1e-6)
        return {**sample, "colors": ((1 - self.blend) * c + self.blend * stretched).astype(np.float32)}

    def __repr__(self) -> str:
        return f"ChromaticAutoContrast(blend={self.blend}, p={self.p})"


def s3dis_train_transforms(crop: float = 8.0) -> Compose:
    """The official S3DIS training augmentation: flip x/y, colour jitter / translation / auto-contrast,
    then the 8 m crop (docs/segmentation.md).
    """
    return Compose([RandomFlip(("x", "y"), p=0.95), ChromaticJitter(0.005, p=0.95), ChromaticTranslation(0.05, p=0.95),
                    ChromaticAutoContrast(0.5, p=0.2), CropCube(crop, "bbox")])


def kitti_train_transforms() -> Compose:
    """The official SemanticKITTI training augmentation: a rotation U(0, 2 pi) about z, an isotropic scale
    U(0.95, 1.05).
    """
    return Compose([RandomRotateUp("z", math.pi, p=1.0), RandomScale(0.95, 1.05, anisotropic=False, p=1.0)])

