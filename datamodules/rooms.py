"""``SyntheticRooms``: generated indoor scenes with colours and per-point labels (the embedded default).

A room is a box (floor, ceiling, four walls) furnished with doors, tables, chairs, shelves and
boxes, each made of axis-aligned cuboids (furniture turned by a random yaw), whose surfaces are
sampled at ``density`` points per m^2 with a little scanner noise. Colours come from overlapping
per-class palettes (a chair may be any of several colours, walls and ceiling are both light), so
geometry matters as much as colour. Every scene is a function of ``(data_seed, split, index)``
only; a split is generated once per process (numpy only, no meshes), so an epoch costs only
voxelisation. Coordinates in metres, z up, the room's corner at the origin.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .segmentation import SegmentationDataModule
from .synthetic import SPLIT_IDS

__all__ = ["ROOM_CLASSES", "generate_room", "SyntheticRooms"]

ROOM_CLASSES = ["ceiling", "floor", "wall", "door", "table", "chair", "shelf", "box"]
_PALETTES = {  # rgb in [0, 1]; several per class, drawn per object
    "ceiling": [(0.92, 0.92, 0.90), (0.85, 0.86, 0.88)],
    "floor": [(0.45, 0.40, 0.35), (0.60, 0.60, 0.62), (0.55, 0.42, 0.30)],
    "wall": [(0.88, 0.86, 0.80), (0.80, 0.82, 0.85), (0.75, 0.78, 0.70)],
    "door": [(0.55, 0.38, 0.22), (0.85, 0.85, 0.85), (0.35, 0.35, 0.40)],
    "table": [(0.60, 0.45, 0.30), (0.20, 0.20, 0.22), (0.90, 0.90, 0.88)],
    "chair": [(0.15, 0.15, 0.18), (0.70, 0.15, 0.15), (0.20, 0.30, 0.65), (0.55, 0.55, 0.55)],
    "shelf": [(0.55, 0.40, 0.25), (0.90, 0.90, 0.88), (0.30, 0.30, 0.32)],
    "box": [(0.70, 0.55, 0.35), (0.30, 0.50, 0.30), (0.85, 0.80, 0.30), (0.60, 0.60, 0.65)],
}
Box = tuple[np.ndarray, np.ndarray]  # (min corner, max corner)


def _box(lo: Sequence[float], hi: Sequence[float]) -> Box:
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def _sample_boxes(boxes: list[Box], density: float, rng: np.random.Generator, skip_bottom: bool = True) -> np.ndarray:
    """Points on the faces of axis-aligned boxes (a face gets ~density x area points, at least one)."""
    out = []
    for lo, hi in boxes:
        size = hi - lo
        for axis in range(3):
            u, v = [a for a in range(3) if a != axis]
            area = size[u] * size[v]
            for side in (0, 1):
                if skip_bottom and axis == 2 and side == 0:
                    continue  # resting on something: never seen by a scanner
                n = max(1, int(rng.poisson(density * area)))
                p = np.empty((n, 3))
                p[:, axis] = hi[axis] if side else lo[axis]
                p[:, u] = rng.uniform(lo[u], hi[u], n)
                p[:, v] = rng.uniform(lo[v], hi[v], n)
                out.append(p)
    return np.concatenate(out) if out else np.zeros((0, 3))


def _yaw(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = points[:, :2] - centre[:2]
    out = points.copy()
    out[:, 0] = centre[0] + c * d[:, 0] - s * d[:, 1]
    out[:, 1] = centre[1] + s * d[:, 0] + c * d[:, 1]
    return out


def _legs(x0: float, y0: float, x1: float, y1: float, h: float, t: float) -> list[Box]:
    return [_box((x, y, 0), (x + t, y + t, h)) for x in (x0, x1 - t) for y in (y0, y1 - t)]


def _table(rng: np.random.Generator, cx: float, cy: float) -> list[Box]:
    w, d, h, t = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.8), rng.uniform(0.03, 0.06)
    x0, y0 = cx - w / 2, cy - d / 2
    return [_box((x0, y0, h - t), (x0 + w, y0 + d, h)), *_legs(x0, y0, x0 + w, y0 + d, h - t, 0.05)]


def _chair(rng: np.random.Generator, cx: float, cy: float) -> list[Box]:
    w, seat, back = rng.uniform(0.4, 0.5), rng.uniform(0.42, 0.48), rng.uniform(0.35, 0.5)
    x0, y0 = cx - w / 2, cy - w / 2
    return [_box((x0, y0, seat - 0.04), (x0 + w, y0 + w, seat)),
            _box((x0, y0 + w - 0.04, seat), (x0 + w, y0 + w, seat + back)),
            *_legs(x0, y0, x0 + w, y0 + w, seat - 0.04, 0.04)]


def _shelf(rng: np.random.Generator, x0: float, width: float, height: float, depth: float) -> list[Box]:
    """A bookcase against the wall y = 0, from x0 to x0 + width."""
    t = 0.03
    boxes = [_box((x0, 0, 0), (x0 + t, depth, height)), _box((x0 + width - t, 0, 0), (x0 + width, depth, height)),
             _box((x0, 0, 0), (x0 + width, t, height))]
    for z in np.linspace(0.0, height - t, int(rng.integers(4, 7))):
        boxes.append(_box((x0, 0, z), (x0 + width, depth, z + t)))
    return boxes


def _on_wall(points: np.ndarray, wall: int, length: tuple[float, float]) -> np.ndarray:
    """Move points built against the wall y = 0 (x along it) onto wall 0..3 of an L x W room."""
    L, W = length
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    placed = {0: (x, y), 1: (L - y, x), 2: (L - x, W - y), 3: (y, W - x)}[wall]
    return np.stack([placed[0], placed[1], z], 1)


def generate_room(rng: np.random.Generator, density: float = 120.0, noise: float = 0.005,
                  size: tuple[float, float] = (3.5, 6.0), height: tuple[float, float] = (2.4, 3.0),
                  ) -> dict[str, np.ndarray]:
    """One furnished room: ``points [P, 3]`` float32 (m), ``colors [P, 3]`` in [0, 1], ``label [P]`` int64
    (indices into ``ROOM_CLASSES``).
    """
    L, W = rng.uniform(*size), rng.uniform(size[0], min(size[1], size[0] + 2.0))
    H = rng.uniform(*height)
    parts: list[tuple[np.ndarray, str]] = [
        (_sample_boxes([_box((0, 0, 0), (L, W, 0))], density, rng, skip_bottom=False), "floor"),
        (_sample_boxes([_box((0, 0, H), (L, W, H))], density, rng, skip_bottom=False), "ceiling"),
    ]
    walls = [_box((0, 0, 0), (L, 0, H)), _box((L, 0, 0), (L, W, H)), _box((0, W, 0), (L, W, H)),
             _box((0, 0, 0), (0, W, H))]
    parts.append((_sample_boxes(walls, density, rng, skip_bottom=False), "wall"))
    lengths = (L, W, L, W)  # wall k runs along x for k even, along y for k odd
    used_walls = rng.permutation(4)
    for k in range(int(rng.integers(1, 3))):  # doors: a panel standing 3 cm out of a wall
        wall = int(used_walls[k])
        dw = rng.uniform(0.8, 1.0)
        x0 = rng.uniform(0.2, max(0.25, lengths[wall] - dw - 0.2))
        panel = _sample_boxes([_box((x0, 0.03, 0), (x0 + dw, 0.03, rng.uniform(2.0, min(2.15, H - 0.1))))],
                              density, rng, skip_bottom=False)
        parts.append((_on_wall(panel, wall, (L, W)), "door"))
    for k in range(int(rng.integers(0, 3))):  # shelves against the remaining walls
        wall = int(used_walls[(k + 2) % 4])
        width = rng.uniform(0.8, 1.4)
        x0 = rng.uniform(0.1, max(0.15, lengths[wall] - width - 0.1))
        pts = _sample_boxes(_shelf(rng, x0, width, rng.uniform(1.5, min(2.2, H - 0.2)), rng.uniform(0.3, 0.4)),
                            density, rng)
        parts.append((_on_wall(pts, wall, (L, W)), "shelf"))
    tables = []
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(1.2, L - 1.2), rng.uniform(1.2, max(1.25, W - 1.2))
        angle = rng.uniform(0, math.pi)
        tables.append((cx, cy))
        pts = _yaw(_sample_boxes(_table(rng, cx, cy), density, rng), np.array([cx, cy]), angle)
        parts.append((pts, "table"))
    for _ in range(int(rng.integers(3, 9))):
        tx, ty = tables[int(rng.integers(len(tables)))]
        r, a = rng.uniform(0.7, 1.1), rng.uniform(0, 2 * math.pi)
        cx, cy = np.clip(tx + r * math.cos(a), 0.4, L - 0.4), np.clip(ty + r * math.sin(a), 0.4, W - 0.4)
        pts = _yaw(_sample_boxes(_chair(rng, cx, cy), density, rng), np.array([cx, cy]), rng.uniform(0, 2 * math.pi))
        parts.append((pts, "chair"))
    for _ in range(int(rng.integers(2, 7))):
        s = rng.uniform(0.2, 0.6, 3)
        cx, cy = rng.uniform(0.4, L - 0.4), rng.uniform(0.4, W - 0.4)
        box = _box((cx - s[0] / 2, cy - s[1] / 2, 0), (cx + s[0] / 2, cy + s[1] / 2, s[2]))
        pts = _sample_boxes([box], density, rng)
        parts.append((_yaw(pts, np.array([cx, cy]), rng.uniform(0, math.pi)), "box"))

    light = rng.uniform(0.8, 1.1)
    points, colors, labels = [], [], []
    for pts, name in parts:
        palette = _PALETTES[name]
        base = np.asarray(palette[int(rng.integers(len(palette)))]) + rng.uniform(-0.08, 0.08, 3)
        colors.append(np.clip((base + rng.normal(0, 0.03, (len(pts), 3))) * light, 0, 1))
        points.append(pts + rng.normal(0, noise, pts.shape))
        labels.append(np.full(len(pts), ROOM_CLASSES.index(name), np.int64))
    return {"points": np.concatenate(points).astype(np.float32), "colors": np.concatenate(colors).astype(np.float32),
            "label": np.concatenate(labels)}


_MEMORY: dict[tuple, list[dict[str, np.ndarray]]] = {}


class SyntheticRooms(SegmentationDataModule):
    """Generated furnished rooms, 8 classes (``ROOM_CLASSES``), seeded by ``data_seed``.

    Args:
        num_train / num_val / num_test: rooms per split.
        density: surface points per m^2 (120: ~12-20k points a room).
        noise: std of the scanner noise (m).
        room_size: range of the room's two floor edges (m); height is 2.4-3.0 m.
        data_seed: the data (``seed`` still drives augmentation).
        **kwargs: ``SegmentationDataModule`` arguments; by default the official S3DIS features
            (``voxel_xyz+rgb_centred``), voxel 0.1 and its augmentation (``s3dis``).
    """

    class_names = ROOM_CLASSES

    def __init__(self, num_train: int = 64, num_val: int = 16, num_test: int = 16, density: float = 120.0,
                 noise: float = 0.005, room_size: tuple[float, float] = (3.5, 6.0), data_seed: int = 0,
                 features: str = "voxel_xyz+rgb_centred", voxel_size: float = 0.1,
                 augmentation: Any = "s3dis", batch_size: int = 4, **kwargs: Any) -> None:
        if kwargs.get("class_names") not in (None, ROOM_CLASSES):
            raise ValueError("SyntheticRooms has a fixed class table (ROOM_CLASSES); do not pass class_names")
        super().__init__(features=features, voxel_size=voxel_size, augmentation=augmentation, batch_size=batch_size,
                         **kwargs)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        if min(self.sizes.values()) < 1:
            raise ValueError(f"num_train/num_val/num_test must be >= 1, got {self.sizes}")
        if density <= 0 or noise < 0 or not 2.5 <= room_size[0] <= room_size[1]:
            raise ValueError(f"need density > 0, noise >= 0 and 2.5 <= room_size[0] <= room_size[1]; got {density}, "
                             f"{noise}, {room_size}")
        self.gen = {"density": float(density), "noise": float(noise), "size": (float(room_size[0]),
                                                                               float(room_size[1]))}
        self.data_seed = data_seed
        self.generation_seconds = 0.0

    def rooms(self, split: str) -> list[dict[str, np.ndarray]]:
        """The split's rooms, generated once per process."""
        key = (split, self.sizes[split], self.data_seed, tuple(sorted(self.gen.items())))
        if key not in _MEMORY:
            start = time.perf_counter()
            _MEMORY[key] = [generate_room(np.random.default_rng([self.data_seed, SPLIT_IDS[split], i]), **self.gen)
                            for i in range(self.sizes[split])]
            self.generation_seconds += time.perf_counter() - start
        return _MEMORY[key]

    def list_samples(self, split: str) -> list:
        return [(split, i) for i in range(self.sizes[split])]

    def read_sample(self, item: tuple[str, int]) -> dict:
        split, i = item
        return dict(self.rooms(split)[i])

    def describe_sample(self, item: tuple[str, int]) -> str:
        return f"SyntheticRooms(data_seed={self.data_seed}) {item[0]} room {item[1]}"

    def class_frequencies(self, split: str = "train") -> np.ndarray:
        """Points per class over a split (the majority-class baseline reads it)."""
        counts = np.zeros(len(ROOM_CLASSES), np.int64)
        for room in self.rooms(split):
            counts += np.bincount(room["label"], minlength=len(ROOM_CLASSES))
        return counts
