"""Generated 2D images of textured, coloured shapes: an offline stand-in for ImageNet.

Ten shape classes drawn at random pose and scale, filled with a random texture (solid,
stripes, checker, gradient) in random colours over a noisy background. Enough visual
structure (edges, corners, textures) for a small ConvNet to learn filters worth inflating.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASS_NAMES", "render_shapes"]

CLASS_NAMES = (
    "circle", "ring", "triangle", "square", "star", "cross", "crescent", "bar", "lshape", "semicircle",
)


def _radial_polygon(phi: np.ndarray, k: int) -> np.ndarray:
    """Boundary radius of a regular k-gon (circumradius 1) in direction ``phi``."""
    sector = 2 * np.pi / k
    return np.cos(np.pi / k) / np.cos(np.mod(phi, sector) - sector / 2)


def _mask(cls: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    if cls == "circle":
        return r <= 1.0
    if cls == "bar":
        return (np.abs(x) <= 1.0) & (np.abs(y) <= rng.uniform(0.2, 0.35))
    if cls == "lshape":
        w = rng.uniform(0.35, 0.5)
        box = (np.abs(x) <= 1.0) & (np.abs(y) <= 1.0)
        return box & ((x <= -1.0 + 2 * w) | (y <= -1.0 + 2 * w))
    if cls == "semicircle":
        return (r <= 1.0) & (y <= 0.0)
    if cls == "ring":
        return (r <= 1.0) & (r >= rng.uniform(0.45, 0.65))
    if cls in ("triangle", "square"):
        k = {"triangle": 3, "square": 4}[cls]
        return r <= _radial_polygon(phi, k)
    if cls == "star":
        k, inner = 5, rng.uniform(0.35, 0.5)
        t = np.abs(np.mod(phi, 2 * np.pi / k) - np.pi / k) / (np.pi / k)  # 1 at tips, 0 between
        return r <= inner + (1.0 - inner) * t
    if cls == "cross":
        w = rng.uniform(0.25, 0.4)
        return ((np.abs(x) <= w) & (np.abs(y) <= 1)) | ((np.abs(y) <= w) & (np.abs(x) <= 1))
    if cls == "crescent":
        s = rng.uniform(0.35, 0.6)
        return (r <= 1.0) & (np.hypot(x - s, y) > 0.85)
    raise ValueError(cls)


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A [size, size] pattern in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        return np.ones((size, size), np.float32)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == 1:
        period = rng.uniform(3, 8)
        return (np.mod(u, period) < period / 2).astype(np.float32)
    if kind == 2:
        period = rng.integers(3, 8)
        return ((xx // period + yy // period) % 2).astype(np.float32)
    return (u - u.min()) / max(1e-6, float(u.max() - u.min()))


def render_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images ``[n, size, size, 3]`` and int64 labels, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = rng.integers(len(CLASS_NAMES), size=n)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    gx, gy = np.meshgrid(grid, grid)
    for i, label in enumerate(labels):
        scale = rng.uniform(0.55, 0.9)
        cx, cy = rng.uniform(-1 + scale, 1 - scale, size=2) * 0.8
        rot = rng.uniform(0, 2 * np.pi)
        dx, dy = (gx - cx) / scale, (gy - cy) / scale
        x = dx * np.cos(rot) + dy * np.sin(rot)
        y = -dx * np.sin(rot) + dy * np.cos(rot)
        mask = _mask(CLASS_NAMES[label], x, y, rng)
        fg_a, fg_b, bg = rng.uniform(0, 1, size=(3, 3))
        bg_tex = _texture(size, rng)[..., None] * rng.uniform(0, 0.15) + bg
        fg_tex = _texture(size, rng)[..., None]
        fg = fg_a * fg_tex + fg_b * (1 - fg_tex)
        img = np.where(mask[..., None], fg, bg_tex) + rng.normal(0, 0.04, size=(size, size, 3))
        images[i] = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return images, labels.astype(np.int64)
