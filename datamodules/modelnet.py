"""ModelNet40 / ModelNet10 from the PointNet HDF5 release or from the raw OFF meshes.

``format="h5"``: ``<root>/modelnet40_ply_hdf5_2048/`` (or ``root`` itself) with
``ply_data_train{0..4}.h5`` / ``ply_data_test{0,1}.h5`` (datasets ``data`` float32 [B, 2048, 3],
``label`` uint8 [B, 1], optional ``normal``), listed by ``train_files.txt`` / ``test_files.txt``
when present, and ``shape_names.txt`` (checked against the built-in class table).

``format="off"``: ``<root>/ModelNet40/<class>/<train|test>/<class>_NNNN.off`` (or the class
folders directly under ``root``). The meshes are surface-sampled once (``mesh_points`` points,
seeded) into one cache file per split, written atomically with a progress bar.

ModelNet has no validation split: ``val`` is the test split, the paper's (and common) practice.
ModelNet10 from the h5 release is the 10 ModelNet10 classes filtered out of ModelNet40 with
labels remapped to 0..9 (the same 3991 / 908 shapes as the official ModelNet10 split); from raw,
``root`` may hold ``ModelNet10/`` or ``ModelNet40/`` (its 10 classes are used).
"""

from __future__ import annotations

import re
import warnings
import zipfile
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from i2p.io import atomic_save_npz, read_h5, read_label_file, read_off, sample_surface

from .download import download_and_extract
from .memory import ArrayDataModule, validate_split

__all__ = [
    "MODELNET40_CLASSES", "MODELNET10_CLASSES", "H5_URL", "H5_DIR", "RAW_URLS", "OFF_CACHE_FORMAT", "ModelNet40",
    "ModelNet10",
]

MODELNET40_CLASSES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink",
    "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
]  # fmt: skip
MODELNET10_CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
H5_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
H5_DIR = "modelnet40_ply_hdf5_2048"
OFF_CACHE_FORMAT = 2  # of the OFF sample cache; a new number rebuilds old caches
RAW_URLS = {"ModelNet40": "https://modelnet.cs.princeton.edu/ModelNet40.zip",
            "ModelNet10": "https://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip"}


def _sample_mesh(job: tuple[str, int, int]) -> np.ndarray:
    path, n, seed = job
    verts, tris = read_off(path)
    return sample_surface(verts, tris, n, seed=seed, where=path)


class ModelNet40(ArrayDataModule):
    """ModelNet40 (40 classes), ``format="h5"`` (PointNet release) or ``"off"`` (raw meshes).

    Args:
        root: data folder (see the module docstring for the layouts searched).
        format: ``"h5"`` or ``"off"``.
        download: fetch the zip into ``root`` when the files are missing (never any network otherwise).
        url: where to fetch it (default: the official URL, ``H5_URL`` / ``RAW_URLS``; the HDF5 one
            is reported dead by several projects: give a mirror).
        archive: a local copy of the zip to unzip instead of downloading (no network).
        md5: checksum of the zip, checked before it is unzipped (recommended with a mirror).
        mesh_points: points sampled per mesh (``off`` only).
        cache_dir: where the sampled meshes are cached (``off`` only; default ``root``).
        preprocess_workers: processes for the one-time mesh sampling (0 = this process).
        **kwargs: ``VoxelDataModule`` arguments.
    """

    class_names = MODELNET40_CLASSES
    dataset_name = "ModelNet40"

    def __init__(
        self,
        root: str = "data/modelnet",
        format: str = "h5",
        download: bool = False,
        url: str | None = None,
        archive: str | None = None,
        md5: str | None = None,
        mesh_points: int = 2048,
        cache_dir: str | None = None,
        preprocess_workers: int = 0,
        **kwargs: Any,
    ) -> None:
        if format not in ("h5", "off"):
            raise ValueError(f"format must be 'h5' or 'off', got {format!r}")
        super().__init__(**kwargs)
        self.root, self.format, self.download = Path(root), format, download
        self.url, self.archive, self.md5 = url, archive, md5
        self.mesh_points, self.preprocess_workers = mesh_points, preprocess_workers
        self.cache_dir = Path(cache_dir) if cache_dir else self.root

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Download (if asked) and preprocess raw meshes; Lightning runs it once per node."""
        if self.format == "h5":
            if (self.download or self.archive) and self._h5_dir() is None:
                download_and_extract(self.url or H5_URL, self.root, md5=self.md5, archive=self.archive)
        else:
            if (self.download or self.archive) and self._raw_dir() is None:
                download_and_extract(self.url or RAW_URLS[self.dataset_name], self.root, md5=self.md5,
                                     archive=self.archive)
            for split in ("train", "test"):
                self._off_cache(split)

    def load_split(self, split: str) -> dict:
        split = "test" if split == "val" else split
        return self._load_h5(split) if self.format == "h5" else self._load_off(split)

    # ------------------------------------------------------------------ HDF5 release
    def _h5_dir(self) -> Path | None:
        for d in (self.root / H5_DIR, self.root):
            if any(d.glob("ply_data_train*.h5")) or (d / "train_files.txt").is_file():
                return d
        return None

    def _missing(self, what: str, url: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.dataset_name} ({self.format}): {what} not found under {self.root.resolve()}. "
            f"Expected {self._layout()}. Get it with download: true (url: a mirror, md5: its checksum), "
            f"archive: a local copy of the zip, or unzip {url} (or a mirror of it) into {self.root}."
        )

    def _layout(self) -> str:
        if self.format == "h5":
            return (f"{H5_DIR}/ply_data_train0..4.h5, ply_data_test0..1.h5 and shape_names.txt "
                    "(optionally train_files.txt/test_files.txt)")
        return f"{self.dataset_name}/<class>/<train|test>/<class>_NNNN.off"

    def h5_files(self, split: str) -> list[Path]:
        """The h5 files of a split: from ``<split>_files.txt`` when present, else by name."""
        d = self._h5_dir()
        if d is None:
            raise self._missing(f"the HDF5 release ({H5_DIR}/ply_data_{split}*.h5)", H5_URL)
        listing = d / f"{split}_files.txt"
        if listing.is_file():
            files = [d / Path(line.strip()).name for line in listing.read_text().splitlines() if line.strip()]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{listing} lists files that are missing: {missing}")
        else:
            files = sorted(d.glob(f"ply_data_{split}*.h5"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)])
        if not files:
            raise self._missing(f"ply_data_{split}*.h5 in {d}", H5_URL)
        names = d / "shape_names.txt"
        if names.is_file() and read_label_file(names) != MODELNET40_CLASSES:
            raise ValueError(f"{names}: class names differ from the ModelNet40 table {MODELNET40_CLASSES}")
        return files

    def _load_h5(self, split: str) -> dict:
        parts = []
        for f in self.h5_files(split):
            raw = read_h5(f, ["data", "label"], optional=["normal"])
            arrays = {"points": raw["data"], "label": raw["label"], "points_field": "data", "source": str(f)}
            part = validate_split(arrays, str(f), len(MODELNET40_CLASSES))
            if "normal" in raw:
                if raw["normal"].shape != part["points"].shape:
                    raise ValueError(f"{f}: field 'normal' has shape {raw['normal'].shape}, expected "
                                     f"{part['points'].shape}")
                part["normals"] = raw["normal"].astype(np.float32)
            parts.append(part)
        keys = [k for k in ("points", "label", "normals") if all(k in p for p in parts)]
        out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
        out["source"] = ", ".join(p["source"] for p in parts)
        return out

    # ------------------------------------------------------------------ raw OFF meshes
    def _raw_dir(self) -> Path | None:
        for d in (self.root / self.dataset_name, self.root / "ModelNet40", self.root):
            if all((d / c).is_dir() for c in self.class_names):
                return d
        return None

    def mesh_files(self, split: str) -> tuple[list[Path], np.ndarray]:
        """OFF files of a split (sorted per class) and their labels."""
        d = self._raw_dir()
        if d is None:
            raise self._missing(f"the raw meshes (class folders "
                                f"{self.class_names[:3]}...)", RAW_URLS[self.dataset_name])
        files, labels = [], []
        for label, c in enumerate(self.class_names):
            found = sorted((d / c / split).glob("*.off"))
            if not found:
                raise FileNotFoundError(f"{self.dataset_name}: no .off meshes in {d / c / split}; expected "
                                        f"{self._layout()}")
            files += found
            labels += [label] * len(found)
        return files, np.array(labels, dtype=np.int64)

    def _off_cache(self, split: str) -> Path:
        """Sample every mesh of a split once into ``<cache_dir>/<name>_off_<split>_<n>pts.npz``.

        The cache records what it was built from (each mesh's path relative to the data folder and
        its size, the settings): when the meshes or settings differ now (meshes added, removed or
        rewritten) or the file is unreadable (a cut copy), it is rebuilt, with a warning counting the
        differences. Without the raw meshes (deleted after caching) the cache is used as it is.
        """
        path = self.cache_dir / f"{self.dataset_name.lower()}_off_{split}_{self.mesh_points}pts.npz"
        if path.is_file() and self._raw_dir() is None:
            return path  # the meshes were removed after caching: nothing to compare the cache with
        files, labels = self.mesh_files(split)
        root = self._raw_dir() or self.root
        names = np.array([f.relative_to(root).as_posix() for f in files])
        sizes = np.array([f.stat().st_size for f in files], dtype=np.int64)
        settings = np.array([f"mesh_points={self.mesh_points}", f"classes={','.join(self.class_names)}",
                             f"cache_format={OFF_CACHE_FORMAT}"])
        if path.is_file():
            stale = _stale_cache(path, names, sizes, settings)
            if stale is None:
                return path
            warnings.warn(f"{path}: {stale}; rebuilding it from {len(files)} meshes", stacklevel=2)
        jobs = [(str(f), self.mesh_points, i) for i, f in enumerate(files)]
        from rich.progress import track

        desc = f"sampling {self.dataset_name} {split} meshes"
        if self.preprocess_workers > 0:
            with get_context("spawn").Pool(self.preprocess_workers) as pool:
                points = list(track(pool.imap(_sample_mesh, jobs, chunksize=16), total=len(jobs), description=desc))
        else:
            points = list(track(map(_sample_mesh, jobs), total=len(jobs), description=desc))
        atomic_save_npz(path, points=np.stack(points), label=labels, files=names, sizes=sizes, settings=settings)
        return path

    def _load_off(self, split: str) -> dict:
        path = self._off_cache(split)
        try:
            with np.load(path) as z:
                return {"points": z["points"], "label": z["label"], "source": str(path)}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{path}: cannot read the mesh cache ({e}); delete it to rebuild") from None


def _stale_cache(path: Path, names: np.ndarray, sizes: np.ndarray, settings: np.ndarray) -> str | None:
    """Why the OFF cache at ``path`` does not match the meshes and settings now, or None when it does."""
    try:
        with np.load(path) as z:
            if not {"files", "sizes", "settings", "points", "label"} <= set(z.files):
                return "written by an older version (it does not record the meshes it was built from)"
            old_names, old_sizes, old_settings = z["files"], z["sizes"], z["settings"]
            if len(z["points"]) != len(old_names):
                return f"holds {len(z['points'])} clouds for {len(old_names)} meshes (corrupt)"
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        return f"unreadable (truncated or corrupt: {type(e).__name__}: {e})"
    if list(old_settings) != list(settings):
        return f"built with {list(old_settings)}, now {list(settings)}"
    before, now = dict(zip(old_names.tolist(), old_sizes.tolist())), dict(zip(names.tolist(), sizes.tolist()))
    if before == now and list(old_names) == list(names):
        return None
    added, removed = len(now.keys() - before.keys()), len(before.keys() - now.keys())
    changed = sum(1 for k in now.keys() & before.keys() if now[k] != before[k])
    return (f"built from {len(before)} meshes, the folder now has {len(now)} ({added} added, {removed} removed, "
            f"{changed} changed in size)")


class ModelNet10(ModelNet40):
    """The 10-class subset (see the module docstring for how it is formed from each format)."""

    class_names = MODELNET10_CLASSES
    dataset_name = "ModelNet10"

    def _load_h5(self, split: str) -> dict:
        full = super()._load_h5(split)
        table = np.full(len(MODELNET40_CLASSES), -1, dtype=np.int64)
        for new, name in enumerate(MODELNET10_CLASSES):
            table[MODELNET40_CLASSES.index(name)] = new
        keep = table[full["label"]] >= 0
        out = {k: v[keep] for k, v in full.items() if isinstance(v, np.ndarray)}
        out["label"] = table[full["label"][keep]]
        out["source"] = full["source"]
        return out
