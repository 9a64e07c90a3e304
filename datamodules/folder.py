"""``PointCloudFolder``: a user's own files, one folder per class, no code to write.

Two layouts are recognised under ``root`` (the first that matches):

- ``root/<split>/<class>/*.<ext>`` (split first, like torchvision's ``ImageFolder`` per split);
- ``root/<class>/<split>/*.<ext>`` (class first: ModelNet's order).

Splits are ``train``, ``val`` and ``test``; ``train`` is required, and a missing ``val`` (or
``test``) is the other one, ModelNet's practice. Any format ``i2p.io.read_point_cloud`` reads
(``.ply .pcd .xyz .txt .csv .npz .npy`` point clouds, ``.off .obj .stl`` meshes, surface-sampled
with ``mesh_points`` points) can be mixed. Class names are the folder names, sorted, unless
``classes`` gives them (an order, or a subset).

Every split is read once into a cache file (``<cache_dir>/pointcloudfolder_<split>_<key>.npz``)
whose key hashes the class list, every file's relative path, size and modification time, and the
reading settings: a new class order, an edited or added file or another ``mesh_points`` gives a
new key, so a cached sample is never served under another label. The cache also records the
class list it was built with, checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from i2p.io import MESH_POINTS, POINT_CLOUD_SUFFIXES, atomic_save_npz, read_point_cloud

from .base import VoxelDataModule

__all__ = ["FOLDER_SPLITS", "CACHE_VERSION", "PointCloudFolder"]

FOLDER_SPLITS = ("train", "val", "test")
CACHE_VERSION = 1  # of the cache file's content; part of its key


class PointCloudFolder(VoxelDataModule):
    """Classification from ``root/<split>/<class>/`` or ``root/<class>/<split>/`` folders of files.

    Args:
        root: the data folder (see the module docstring for the layouts).
        classes: class folder names in label order; default: every class folder, sorted.
        extensions: file suffixes to read (default: every format ``read_point_cloud`` reads).
        mesh_points: points sampled on each mesh surface (``.off/.obj/.stl``; seeded, the same
            points every time).
        cache_dir: where the per-split caches go (default ``<root>/.i2p_cache``).
        **kwargs: ``VoxelDataModule`` arguments (voxel_size, num_points, features, batch_size,
            few_shot, ...).
    """

    def __init__(
        self,
        root: str = "data/my_shapes",
        classes: list[str] | None = None,
        extensions: list[str] | None = None,
        mesh_points: int = MESH_POINTS,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("class_names") is not None:
            raise ValueError("PointCloudFolder takes its class table from the folders (or `classes`); do not pass "
                             "class_names")
        super().__init__(**kwargs)
        self.root = Path(root)
        exts = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in (extensions or POINT_CLOUD_SUFFIXES)]
        unknown = [e for e in exts if e not in POINT_CLOUD_SUFFIXES]
        if unknown:
            raise ValueError(f"extensions {unknown} cannot be read; choose from {POINT_CLOUD_SUFFIXES}")
        self.extensions = tuple(exts)
        if mesh_points < 1:
            raise ValueError(f"mesh_points must be >= 1, got {mesh_points}")
        self.mesh_points = mesh_points
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".i2p_cache"
        self.layout, self.split_dirs = self._find_layout()
        found = sorted({c for folder in set(self.split_dirs.values()) for c in self._class_dirs(folder)})
        if classes is not None:
            classes = [str(c) for c in classes]
            if len(set(classes)) != len(classes):
                raise ValueError(f"classes {classes} repeat a name")
            missing = [c for c in classes if c not in found]
            if missing:
                raise ValueError(f"{self.root}: classes {missing} have no folder (found {found})")
        elif len(found) < 2:
            raise ValueError(f"{self.root}: found {len(found)} class folder(s) {found}; expected at least two "
                             f"({self._layout_text()})")
        self.class_names = list(classes) if classes is not None else found
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ layout
    def _layout_text(self) -> str:
        return f"{self.root}/<split>/<class>/*.<ext> or {self.root}/<class>/<split>/*.<ext>, split in {FOLDER_SPLITS}"

    def _find_layout(self) -> tuple[str, dict[str, str]]:
        """("split_first" | "class_first", {split: the split it reads}) with val/test standing in for each other."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"PointCloudFolder: {self.root.resolve()} is not a folder; expected "
                                    f"{self._layout_text()}")
        present = [s for s in FOLDER_SPLITS if (self.root / s).is_dir()]
        if present:
            layout = "split_first"
        else:
            layout = "class_first"
            subdirs = [d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
            present = [s for s in FOLDER_SPLITS if any((d / s).is_dir() for d in subdirs)]
        if "train" not in present or not ({"val", "test"} & set(present)):
            raise FileNotFoundError(f"PointCloudFolder: no train and val/test folders under {self.root.resolve()} "
                                    f"(found splits {present}); expected {self._layout_text()}")
        dirs = {s: s for s in present}
        dirs.setdefault("val", "test")
        dirs.setdefault("test", "val")
        return layout, dirs

    def _class_dirs(self, split: str) -> dict[str, Path]:
        """{class name: its folder} of a split (as stored on disk: ``split`` is a folder name)."""
        if self.layout == "split_first":
            base = self.root / split
            return {d.name: d for d in sorted(base.iterdir()) if d.is_dir() and not d.name.startswith(".")}
        return {d.name: d / split for d in sorted(self.root.iterdir())
                if d.is_dir() and not d.name.startswith(".") and (d / split).is_dir()}

    def files(self, split: str) -> tuple[list[Path], np.ndarray]:
        """The files of a split (sorted per class) and their labels (the index in ``class_names``)."""
        folder = self.split_dirs[split]
        dirs = self._class_dirs(folder)
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(self.class_names):
            if name not in dirs:
                continue
            found = sorted(p for p in dirs[name].iterdir() if p.is_file() and p.suffix.lower() in self.extensions)
            files += found
            labels += [label] * len(found)
        if not files:
            raise FileNotFoundError(f"PointCloudFolder: no {list(self.extensions)} files in split '{folder}' under "
                                    f"{self.root.resolve()}; expected {self._layout_text()}")
        return files, np.array(labels, dtype=np.int64)

    # ------------------------------------------------------------------ cache
    def cache_key(self, split: str) -> str:
        """Hash of what decides a split's cached samples: the classes in order, every file (relative path,
        size, mtime) and the reading settings.
        """
        files, labels = self.files(split)
        listing = []
        for f, label in zip(files, labels):
            st = f.stat()
            listing.append([str(f.relative_to(self.root)), int(label), st.st_size, st.st_mtime_ns])
        key = {"version": CACHE_VERSION, "classes": self.class_names, "mesh_points": self.mesh_points,
               "files": listing}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]

    def cache_path(self, split: str) -> Path:
        return self.cache_dir / f"pointcloudfolder_{self.split_dirs[split]}_{self.cache_key(split)}.npz"

    def _build_cache(self, split: str, path: Path) -> None:
        from rich.progress import track

        files, labels = self.files(split)
        clouds = [read_point_cloud(f, mesh_points=self.mesh_points, seed=0)
                  for f in track(files, description=f"reading {self.root.name}/{self.split_dirs[split]}",
                                 disable=len(files) < 200 or not os.isatty(1))]
        sizes = np.array([len(c["points"]) for c in clouds], dtype=np.int64)
        arrays = {
            "points": np.concatenate([c["points"] for c in clouds]).astype(np.float32),
            "offsets": np.concatenate([[0], np.cumsum(sizes)]),
            "label": labels,
            "files": np.array([str(f.relative_to(self.root)) for f in files]),
            "classes": np.array(self.class_names),
        }
        for key in ("colors", "normals"):  # kept when every file of the split has them
            if all(key in c for c in clouds):
                arrays[key] = np.concatenate([c[key] for c in clouds]).astype(np.float32)
        atomic_save_npz(path, **arrays)

    def prepare_data(self) -> None:
        """Read every split into its cache once (Lightning runs this on one process per node)."""
        for split in set(self.split_dirs.values()):
            path = self.cache_path(split)
            if not path.is_file():
                self._build_cache(split, path)

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """The cached arrays of a split (building the cache when missing)."""
        split = self.split_dirs[split]
        if split not in self._arrays:
            path = self.cache_path(split)
            if not path.is_file():
                self._build_cache(split, path)
            try:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: cannot read the PointCloudFolder cache ({e}); delete it to "
                                 "rebuild") from None
            if list(arrays["classes"]) != self.class_names:  # the key makes this impossible; never relabel silently
                raise ValueError(f"{path}: cached with classes {list(arrays['classes'])}, not {self.class_names}; "
                                 "delete it to rebuild")
            self._arrays[split] = arrays
        return self._arrays[split]

    # ------------------------------------------------------------------ VoxelDataModule
    def list_samples(self, split: str) -> list:
        return [(split, i) for i in range(len(self.arrays(split)["label"]))]

    def read_sample(self, item: tuple[str, int]) -> dict:
        split, i = item
        a = self.arrays(split)
        lo, hi = int(a["offsets"][i]), int(a["offsets"][i + 1])
        sample = {"points": a["points"][lo:hi], "label": int(a["label"][i])}
        for key in ("colors", "normals"):
            if key in a:
                sample[key] = a[key][lo:hi]
        return sample

    def sample_label(self, item: tuple[str, int]) -> int:
        return int(self.arrays(item[0])["label"][item[1]])

    def describe_sample(self, item: tuple[str, int]) -> str:
        split, i = item
        return str(self.root / str(self.arrays(split)["files"][i]))
