"""Reading and writing point clouds, meshes, HDF5 arrays and label files.

open3d and h5py are heavy optional imports: they load on first use with a clear error. Every
error names the file (and the field) so a broken download is found quickly. OFF meshes are
parsed here, not by open3d, because ModelNet ships files whose first line is ``OFF490 518 0``
(no newline after ``OFF``), which general readers reject; otherwise the reader follows the OFF
specification (``read_off_data``). A mesh file read as a point cloud is surface-sampled
(``read_point_cloud``, ``MESH_POINTS``).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from i2p.optional import require

__all__ = [
    "require_open3d", "require_h5py", "read_label_file", "write_label_file", "atomic_path",
    "atomic_write_bytes", "atomic_save_npz", "TEMP_MARK", "stale_temp_files", "remove_stale_temp_files",
    "check_points", "MESH_POINTS", "read_off_data", "read_off", "write_off", "to_o3d_mesh", "read_mesh", "write_mesh",
    "sample_surface", "MESH_SUFFIXES", "POINT_CLOUD_SUFFIXES", "read_point_cloud", "write_point_cloud", "read_h5",
    "write_h5",
]

PathLike = str | os.PathLike


def require_open3d() -> Any:
    """open3d, for point-cloud/mesh IO and surface sampling (imported on first use)."""
    return require("open3d", "point-cloud/mesh IO and surface sampling")


def require_h5py() -> Any:
    """h5py, for the HDF5 releases (ModelNet40 h5, ScanObjectNN) (imported on first use)."""
    return require("h5py", "HDF5 data sets (ModelNet40 h5, ScanObjectNN)")


# ----------------------------------------------------------------------------- label files
def read_label_file(path: PathLike) -> list[str]:
    """One class name per line (e.g. ModelNet's ``shape_names.txt``); blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"label file {path} is empty: expected one class name per line")
    if len(set(names)) != len(names):
        raise ValueError(f"label file {path} repeats class names")
    return names


def write_label_file(path: PathLike, names: Sequence[str]) -> None:
    """Write one class name per line."""
    atomic_write_bytes(path, ("\n".join(names) + "\n").encode())


# ----------------------------------------------------------------------------- atomic files
#: ``atomic_path`` names its temporary files ``.<name>.<random>.tmp<suffix>`` beside the target
TEMP_MARK = ".tmp"
_UMASK_LOCK = threading.Lock()


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the target's own mode when it exists (a
    rewrite keeps it), else ``0o666`` less the process umask (``mkstemp`` alone gives 0600).
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        pass
    with _UMASK_LOCK:  # reading the umask means setting it; keep the window closed to other threads
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) and rename it onto ``path`` on success,
    so readers never see half a file and a crash leaves no partial file behind.

    The temporary file sits in the target's folder (never ``TMPDIR``), so the final ``os.replace``
    is a rename on one filesystem, not a copy a kill can cut short. The file gets the user's umask
    (or the replaced file's mode) and, with ``fsync``, reaches the disk before the rename. A
    ``SIGKILL`` can still leave the temporary file: ``remove_stale_temp_files`` clears them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{path.suffix}")
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some filesystems refuse directory fds)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temp_files(folder: PathLike, name: str | None = None) -> list[Path]:
    """Temporary files ``atomic_path`` left in ``folder`` (all, or those of target ``name``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(r"\.(?P<target>.+)\.[A-Za-z0-9_]{8}" + re.escape(TEMP_MARK) + r"(\.[^.]*)?")
    found = []
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_file() and (name is None or m.group("target") == name):
            found.append(p)
    return sorted(found)


def remove_stale_temp_files(folder: PathLike, name: str | None = None) -> list[Path]:
    """Delete what a killed writer left in ``folder`` (see ``stale_temp_files``); returns them.

    Call it only where no other process is writing into ``folder`` at the moment (e.g. a run's own
    checkpoint folder before its fit starts).
    """
    removed = []
    for p in stale_temp_files(folder, name):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


# ----------------------------------------------------------------------------- validation
def check_points(points: np.ndarray, where: str, field: str = "points") -> np.ndarray:
    """Return ``points`` as float32 [P, 3] or raise ValueError naming ``where`` and ``field``."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{where}: field '{field}' has shape {pts.shape}, expected [P, 3]")
    if pts.shape[0] == 0:
        raise ValueError(f"{where}: field '{field}' is an empty point cloud, expected at least one point")
    if not np.issubdtype(pts.dtype, np.number):
        raise ValueError(f"{where}: field '{field}' has dtype {pts.dtype}, expected floating point")
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{where}: field '{field}' has NaN/Inf coordinates (first at point {bad}), expected finite "
                         f"values")
    with np.errstate(over="ignore"):  # reported below, naming the file
        out = pts.astype(np.float32, copy=False)
    if not np.isfinite(out).all():  # finite as float64, infinite as float32
        raise ValueError(f"{where}: field '{field}' has coordinates up to {float(np.abs(pts).max()):.3g}, beyond the "
                         f"float32 range (3.4e38) the clouds are stored in; expected values of a sane scale")
    return out


# ----------------------------------------------------------------------------- OFF meshes
#: points sampled on a mesh's surface when a mesh file is read as a point cloud (PointNet's ModelNet count)
MESH_POINTS = 2048
_OFF_HEADER = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF(.*)$")


def read_off_data(path: PathLike) -> dict[str, np.ndarray]:
    """Read an OFF file -> dict(vertices float32 [V, 3], triangles int64 [F, 3], optional normals, colors).

    Follows the format's specification (the Geomview ``[ST][C][N][4][n]OFF`` header, ``#`` comments,
    blank lines, per-vertex normals / colours / texture coordinates in that order, face colours,
    ``F = 0`` point sets, polygons fan-triangulated, homogeneous ``4OFF`` coordinates) and ModelNet's
    quirk, a first line ``OFF<nv> <nf> <ne>`` with the counts glued to the keyword. Colours are
    floats in [0, 1] (0-255 integers are rescaled); binary OFF is refused with a clear message.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OFF file not found: {path}")
    text = path.read_text(errors="replace")
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    match = _OFF_HEADER.match(lines[0].split()[0]) if lines else None
    if match is None:
        raise ValueError(f"{path}: not an OFF file (first line should be [ST][C][N][4][n]OFF)")
    texture, color, normal, homogeneous, ndim_line, glued = match.groups()
    head = (glued + " " + " ".join(lines[0].split()[1:])).split()  # the quirk: counts glued to 'OFF'
    if head[:1] == ["BINARY"]:
        raise ValueError(f"{path}: binary OFF is not supported; convert it to the text form")
    rest = lines[1:]
    dim = 3
    if ndim_line:
        if not head:
            if not rest:
                raise ValueError(f"{path}: nOFF header has no dimension line")
            head, rest = rest[0].split(), rest[1:]
        try:
            dim = int(head.pop(0))
        except ValueError:
            raise ValueError(f"{path}: bad nOFF dimension line, expected an integer") from None
        if dim != 3:
            raise ValueError(f"{path}: OFF vertices of dimension {dim}, expected 3 (point clouds live in 3D)")
    if not head:
        if not rest:
            raise ValueError(f"{path}: OFF header has no vertex/face counts")
        head, rest = rest[0].split(), rest[1:]
    try:
        nv, nf = int(head[0]), int(head[1])
    except (ValueError, IndexError):
        raise ValueError(f"{path}: bad OFF header {lines[0]!r}, expected 'OFF' then '<nv> <nf> <ne>'") from None
    if nv <= 0 or nf < 0:
        raise ValueError(f"{path}: OFF header says {nv} vertices and {nf} faces, expected at least one vertex")
    if len(rest) < nv + nf:
        raise ValueError(f"{path}: truncated OFF file: header says {nv} vertices and {nf} faces, found {len(rest)} "
                         f"lines")
    ncoord = dim + (1 if homogeneous else 0)
    table = _off_vertex_table(rest[:nv], path)
    need = ncoord + (3 if normal else 0)
    if table.shape[1] < need:
        raise ValueError(f"{path}: OFF vertex lines must hold {ncoord} coordinates"
                         + (" and 3 normal components" if normal else "")
                         + f" (three numbers at least), found {table.shape[1]}")
    verts = table[:, :3] / table[:, 3:4] if homogeneous else table[:, :3]
    out: dict[str, np.ndarray] = {"vertices": check_points(verts, str(path), "vertices")}
    col = ncoord
    if normal:
        out["normals"] = table[:, col:col + 3].astype(np.float32)
        col += 3
    if color:
        ncol = table.shape[1] - col - (2 if texture else 0)
        if ncol not in (3, 4):
            raise ValueError(f"{path}: COFF vertex colours must be RGB or RGBA, found {ncol} values")
        rgb = table[:, col:col + 3]
        out["colors"] = (rgb / 255.0 if rgb.max() > 1.0 else rgb).astype(np.float32)
    faces = _off_faces(rest[nv:nv + nf], path)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise ValueError(f"{path}: OFF face indices out of range [0, {nv})")
    out["triangles"] = faces
    return out


def read_off(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an OFF mesh -> (vertices float32 [V, 3], triangles int64 [F, 3]); see ``read_off_data``."""
    data = read_off_data(path)
    return data["vertices"], data["triangles"]


def _off_vertex_table(lines: list[str], path: Path) -> np.ndarray:
    """Vertex lines -> float64 [V, columns]; vectorised when every line has the same length."""
    width = len(lines[0].split())
    try:
        flat = np.array(" ".join(lines).split(), dtype=np.float64)
    except ValueError:
        flat = None
    if flat is not None and flat.size == width * len(lines):
        return flat.reshape(len(lines), width)
    rows = [ln.split() for ln in lines]
    for i, row in enumerate(rows):
        try:
            [float(v) for v in row]
        except ValueError:
            raise ValueError(f"{path}: OFF vertex {i} {lines[i]!r}: expected three numbers at least") from None
        if len(row) < 3:
            raise ValueError(f"{path}: OFF vertex {i} {lines[i]!r} holds {len(row)} values, expected three numbers "
                             f"at least")
    width = min(len(r) for r in rows)  # ragged (an optional alpha on some lines): the columns all lines have
    return np.array([r[:width] for r in rows], dtype=np.float64)


def _off_faces(lines: list[str], path: Path) -> np.ndarray:
    """Face lines -> triangles; a vectorised path for all-triangle meshes, fans for polygons (face colours
    after the indices are ignored).
    """
    try:
        flat = np.array(" ".join(lines).split(), dtype=np.int64)
        if flat.size == 4 * len(lines) and np.all(flat[::4] == 3):
            return flat.reshape(-1, 4)[:, 1:]
    except ValueError:
        pass  # face colours (floats) or a bad token: the line-by-line pass below
    tris: list[list[int]] = []
    for i, ln in enumerate(lines):
        vals = ln.split()
        try:
            k = int(vals[0])
            idx = [int(v) for v in vals[1 : 1 + k]]
        except (ValueError, IndexError):
            raise ValueError(f"{path}: bad OFF face line {i}: {ln!r}") from None
        if len(idx) != k or k < 3:
            raise ValueError(f"{path}: OFF face {i} lists {len(idx)} of {k} vertices, expected at least 3")
        tris.extend([idx[0], idx[j], idx[j + 1]] for j in range(1, k - 1))
    return np.array(tris, dtype=np.int64).reshape(-1, 3)


def write_off(path: PathLike, vertices: np.ndarray, triangles: np.ndarray, glued_header: bool = False) -> None:
    """Write an OFF mesh; ``glued_header`` reproduces ModelNet's ``OFF<nv> <nf> 0`` quirk (for tests)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(triangles, dtype=np.int64)
    head = f"OFF{len(v)} {len(f)} 0\n" if glued_header else f"OFF\n{len(v)} {len(f)} 0\n"
    body = "".join(f"{a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in v)
    body += "".join(f"{len(t)} " + " ".join(map(str, t)) + "\n" for t in f)
    atomic_write_bytes(path, (head + body).encode())


# ----------------------------------------------------------------------------- meshes, open3d
def to_o3d_mesh(vertices: np.ndarray, triangles: np.ndarray) -> Any:
    """Numpy arrays -> ``open3d.geometry.TriangleMesh``."""
    o3d = require_open3d()
    return o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(triangles, dtype=np.int32)),
    )


def read_mesh(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh -> (vertices [V, 3], triangles [F, 3]); OFF here, others via open3d."""
    path = Path(path)
    if path.suffix.lower() == ".off":
        return read_off(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    mesh = require_open3d().io.read_triangle_mesh(str(path))
    v, f = np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.triangles, dtype=np.int64)
    if len(v) == 0:
        raise ValueError(f"{path}: open3d read no vertices (unsupported or corrupt mesh)")
    return v, f


def write_mesh(path: PathLike, vertices: np.ndarray, triangles: np.ndarray) -> None:
    """Write a triangle mesh; OFF here, other extensions (ply, obj, stl) via open3d."""
    path = Path(path)
    if path.suffix.lower() == ".off":
        return write_off(path, vertices, triangles)
    mesh = to_o3d_mesh(vertices, triangles)
    if path.suffix.lower() == ".stl":  # STL stores facet normals
        mesh.compute_triangle_normals()
    with atomic_path(path) as tmp:  # same suffix: open3d picks the format from it
        if not require_open3d().io.write_triangle_mesh(str(tmp), mesh):
            raise OSError(f"open3d could not write mesh {path}")


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, seed: int, where: str = "mesh") -> np.ndarray:
    """``n`` points uniformly on the mesh surface (open3d, seeded) -> float32 [n, 3]."""
    o3d = require_open3d()
    if len(triangles) == 0:
        raise ValueError(f"{where}: mesh has no faces, cannot sample its surface")
    mesh = to_o3d_mesh(vertices, triangles)
    if mesh.get_surface_area() <= 0:
        raise ValueError(f"{where}: mesh has zero surface area, cannot sample its surface")
    o3d.utility.random.seed(int(seed) % (2**31))
    return np.asarray(mesh.sample_points_uniformly(number_of_points=int(n)).points, dtype=np.float32)


# ----------------------------------------------------------------------------- point clouds
#: files read as meshes and surface-sampled by ``read_point_cloud`` (a ``.ply`` with faces too)
MESH_SUFFIXES = (".off", ".obj", ".stl")
#: every suffix ``read_point_cloud`` reads
POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".csv", ".npz", ".npy", *MESH_SUFFIXES)


def _ply_face_count(path: Path) -> int:
    """Faces declared in a PLY header (``element face N``); 0 for a plain point cloud."""
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("ascii", errors="replace").strip()
            if line.startswith("element face"):
                try:
                    return int(line.split()[2])
                except (IndexError, ValueError):
                    return 0
            if line == "end_header":
                return 0
    return 0


def read_point_cloud(path: PathLike, mesh_points: int = MESH_POINTS, seed: int = 0) -> dict[str, np.ndarray]:
    """Read a point cloud -> dict(points [P, 3], optional colors, normals).

    ``.npy`` ([P, 3+]), ``.npz`` (keys points/colors/normals), ``.txt``/``.xyz``/``.csv`` text
    (x y z [r g b]) via numpy; ``.ply``/``.pcd`` via open3d. A mesh (``.off``, ``.obj``, ``.stl``,
    or a ``.ply`` with faces) is surface-sampled: ``mesh_points`` points, uniformly by area,
    seeded by ``seed`` (the same file and arguments give the same points); an OFF file without
    faces is a point set and reads as its vertices.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point cloud file not found: {path}")
    ext = path.suffix.lower()
    if ext not in POINT_CLOUD_SUFFIXES:
        raise ValueError(f"{path}: unsupported point-cloud format {ext!r}; expected one of {POINT_CLOUD_SUFFIXES}")
    out: dict[str, np.ndarray] = {}
    if ext == ".off":
        data = read_off_data(path)
        if len(data["triangles"]):
            out["points"] = sample_surface(data["vertices"], data["triangles"], mesh_points, seed, where=str(path))
        else:
            out = {"points": data["vertices"], **{k: data[k] for k in ("colors", "normals") if k in data}}
    elif ext in MESH_SUFFIXES or (ext == ".ply" and _ply_face_count(path) > 0):
        verts, tris = read_mesh(path)
        if len(tris) == 0:
            raise ValueError(f"{path}: a mesh without faces, cannot sample its surface")
        out["points"] = sample_surface(verts, tris, mesh_points, seed, where=str(path))
    elif ext == ".npz":
        try:
            with np.load(path) as z:
                if "points" not in z:
                    raise ValueError(f"{path}: field 'points' missing (has {sorted(z.files)}), expected an [P, 3] "
                                     "array")
                out = {k: np.asarray(z[k]) for k in ("points", "colors", "normals") if k in z}
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise ValueError(f"{path}: cannot read the .npz archive (truncated or corrupt: {e})") from None
        except ValueError as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"{path}: cannot read the .npz arrays ({e}); object arrays (pickles) are "
                             "refused") from None
    elif ext in (".npy", ".txt", ".xyz", ".csv"):
        try:
            arr = np.load(path) if ext == ".npy" else np.loadtxt(path, delimiter="," if ext == ".csv" else None,
                                                                 ndmin=2)
        except (ValueError, EOFError, OSError) as e:
            raise ValueError(f"{path}: cannot parse point cloud ({e}); pickled (object) arrays are refused") from None
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise ValueError(f"{path}: array has shape {arr.shape}, expected [P, 3+] (x y z [r g b])")
        out["points"] = arr[:, :3]
        if arr.shape[1] >= 6:
            out["colors"] = arr[:, 3:6]
    else:
        pcd = require_open3d().io.read_point_cloud(str(path))
        if not pcd.has_points():  # open3d returns an empty cloud, with a console warning, on a bad file
            raise ValueError(f"{path}: open3d read no points: an empty, corrupt or truncated {ext} file (or a mesh "
                             "without vertices)")
        out["points"] = np.asarray(pcd.points)
        if pcd.has_colors():
            out["colors"] = np.asarray(pcd.colors)
        if pcd.has_normals():
            out["normals"] = np.asarray(pcd.normals)
    out["points"] = check_points(out["points"], str(path))
    for k in ("colors", "normals"):
        if k in out:
            if out[k].shape != out["points"].shape:
                raise ValueError(f"{path}: field '{k}' has shape {out[k].shape}, expected {out['points'].shape}")
            out[k] = out[k].astype(np.float32)
    return out


def write_point_cloud(
    path: PathLike, points: np.ndarray, colors: np.ndarray | None = None, normals: np.ndarray | None = None
) -> None:
    """Write a point cloud: ``.npz``/``.npy``/``.txt`` via numpy, ``.ply``/``.pcd`` via open3d."""
    path = Path(path)
    pts = check_points(points, str(path))
    ext = path.suffix.lower()
    if ext == ".npz":
        extra = {k: np.asarray(v, np.float32) for k, v in (("colors", colors), ("normals", normals)) if v is not None}
        atomic_save_npz(path, points=pts, **extra)
        return
    table = pts if colors is None else np.concatenate([pts, np.asarray(colors, np.float32)], 1)
    with atomic_path(path) as tmp:  # same suffix: open3d picks the format from it
        if ext == ".npy":
            np.save(tmp, table)
        elif ext in (".txt", ".xyz"):
            np.savetxt(tmp, table, fmt="%.6f")
        else:
            o3d = require_open3d()
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
            if colors is not None:
                pcd.colors = o3d.utility.Vector3dVector(np.asarray(colors, np.float64))
            if normals is not None:
                pcd.normals = o3d.utility.Vector3dVector(np.asarray(normals, np.float64))
            if not o3d.io.write_point_cloud(str(tmp), pcd):
                raise OSError(f"open3d could not write point cloud {path}")


# ----------------------------------------------------------------------------- HDF5
def read_h5(path: PathLike, fields: Iterable[str], optional: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read whole datasets from an HDF5 file; missing, truncated or corrupt files raise naming the file."""
    h5py = require_h5py()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HDF5 file not found: {path}")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            for name in list(fields) + list(optional):
                if name not in f:
                    if name in optional:
                        continue
                    raise ValueError(f"{path}: field '{name}' missing (has {sorted(f.keys())}), expected fields "
                                     f"{list(fields)}")
                out[name] = np.asarray(f[name][()])
    except OSError as e:
        raise ValueError(f"{path}: cannot read HDF5 file (truncated or corrupt?): {e}") from None
    return out


def write_h5(path: PathLike, **arrays: np.ndarray) -> None:
    """Write arrays as HDF5 datasets (atomic: temporary file + rename)."""
    h5py = require_h5py()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
