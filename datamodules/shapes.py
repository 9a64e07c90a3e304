"""Procedural shape classes for ``SyntheticShapes``: open3d primitives and combinations.

Each builder takes a numpy generator and returns a mesh ``(vertices [V, 3], triangles [F, 3])``
built z-up around the origin with random proportions. The set mixes easy classes with
confusable pairs (cube vs cuboid, cylinder vs capsule vs mug, table vs chair) so a network
does not saturate within an epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from i2p.io import require_open3d

__all__ = ["SHAPES"]

Mesh = tuple[np.ndarray, np.ndarray]


def _arrays(mesh) -> Mesh:
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int64)


def _merge(parts: list[Mesh]) -> Mesh:
    verts, tris, n = [], [], 0
    for v, f in parts:
        verts.append(v)
        tris.append(f + n)
        n += len(v)
    return np.concatenate(verts), np.concatenate(tris)


def _box(w: float, d: float, h: float, center=(0.0, 0.0, 0.0)) -> Mesh:
    v, f = _arrays(require_open3d().geometry.TriangleMesh.create_box(w, d, h))
    return v - np.array([w, d, h]) / 2 + np.asarray(center), f


def _at(mesh: Mesh, offset) -> Mesh:
    return mesh[0] + np.asarray(offset, dtype=np.float64), mesh[1]


def cube(rng: np.random.Generator) -> Mesh:
    return _box(*rng.uniform(0.85, 1.15, 3))


def cuboid(rng: np.random.Generator) -> Mesh:
    sides = rng.uniform(0.8, 1.1, 3)
    sides[rng.integers(3)] *= rng.uniform(1.6, 2.4)
    return _box(*sides)


def sphere(rng: np.random.Generator) -> Mesh:
    return _arrays(require_open3d().geometry.TriangleMesh.create_sphere(radius=rng.uniform(0.8, 1.2), resolution=12))


def cylinder(rng: np.random.Generator) -> Mesh:
    r = rng.uniform(0.3, 0.5)
    return _arrays(require_open3d().geometry.TriangleMesh.create_cylinder(radius=r, height=r * rng.uniform(2.5, 5.0),
                                                                          resolution=24))


def capsule(rng: np.random.Generator) -> Mesh:
    o3d = require_open3d()
    r = rng.uniform(0.3, 0.5)
    h = r * rng.uniform(2.0, 4.0)
    body = _arrays(o3d.geometry.TriangleMesh.create_cylinder(radius=r, height=h, resolution=24))
    cap = _arrays(o3d.geometry.TriangleMesh.create_sphere(radius=r, resolution=12))
    return _merge([body, _at(cap, (0, 0, h / 2)), _at(cap, (0, 0, -h / 2))])


def cone(rng: np.random.Generator) -> Mesh:
    r = rng.uniform(0.4, 0.7)
    return _at(_arrays(require_open3d().geometry.TriangleMesh.create_cone(radius=r, height=r * rng.uniform(1.5, 3.0),
                                                                          resolution=24)), (0, 0, -0.5))


def torus(rng: np.random.Generator) -> Mesh:
    tube = rng.uniform(0.15, 0.4)
    mesh = require_open3d().geometry.TriangleMesh.create_torus(
        torus_radius=1.0, tube_radius=tube, radial_resolution=24, tubular_resolution=12)
    return _arrays(mesh)


def arrow(rng: np.random.Generator) -> Mesh:
    mesh = require_open3d().geometry.TriangleMesh.create_arrow(
        cylinder_radius=rng.uniform(0.08, 0.15), cone_radius=rng.uniform(0.2, 0.3),
        cylinder_height=rng.uniform(1.2, 1.8), cone_height=rng.uniform(0.4, 0.7), resolution=16,
    )
    return _at(_arrays(mesh), (0, 0, -1.0))


def _legs(w: float, d: float, h: float, t: float, z0: float) -> list[Mesh]:
    return [_box(t, t, h, (sx * (w / 2 - t), sy * (d / 2 - t), z0 + h / 2)) for sx in (-1, 1) for sy in (-1, 1)]


def table(rng: np.random.Generator) -> Mesh:
    w, d, h = rng.uniform(1.2, 2.0), rng.uniform(0.8, 1.2), rng.uniform(0.7, 1.0)
    top_t, leg_t = rng.uniform(0.05, 0.12), rng.uniform(0.06, 0.12)
    return _merge([_box(w, d, top_t, (0, 0, h)), *_legs(w, d, h, leg_t, 0.0)])


def chair(rng: np.random.Generator) -> Mesh:
    w, seat_h, back_h = rng.uniform(0.8, 1.1), rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)
    t, leg_t = rng.uniform(0.05, 0.1), rng.uniform(0.06, 0.1)
    seat = _box(w, w, t, (0, 0, seat_h))
    back = _box(w, t, back_h, (0, -w / 2 + t / 2, seat_h + back_h / 2))
    return _merge([seat, back, *_legs(w, w, seat_h, leg_t, 0.0)])


def lshape(rng: np.random.Generator) -> Mesh:
    a, b, t, d = rng.uniform(1.2, 1.8), rng.uniform(0.8, 1.4), rng.uniform(0.25, 0.45), rng.uniform(0.3, 0.6)
    return _merge([_box(a, d, t, (0, 0, t / 2)), _box(t, d, b, (-a / 2 + t / 2, 0, t + b / 2))])


def mug(rng: np.random.Generator) -> Mesh:
    o3d = require_open3d()
    r = rng.uniform(0.4, 0.55)
    h = r * rng.uniform(1.8, 2.8)
    body = _arrays(o3d.geometry.TriangleMesh.create_cylinder(radius=r, height=h, resolution=24))
    ring_r = h * 0.28
    ring = _arrays(o3d.geometry.TriangleMesh.create_torus(torus_radius=ring_r, tube_radius=rng.uniform(0.05, 0.09),
                                                          radial_resolution=16, tubular_resolution=8))
    hv = ring[0][:, [0, 2, 1]] + np.array([r + 0.4 * ring_r, 0, 0])  # handle in the x-z plane, sticking out
    return _merge([body, (hv, ring[1])])


SHAPES: dict[str, Callable[[np.random.Generator], Mesh]] = {
    "cube": cube, "cuboid": cuboid, "sphere": sphere, "cylinder": cylinder, "capsule": capsule,
    "cone": cone, "torus": torus, "arrow": arrow, "table": table, "chair": chair,
    "lshape": lshape, "mug": mug,
}
