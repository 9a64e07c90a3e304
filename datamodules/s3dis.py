"""S3DIS (``Stanford3dDataset_v1.2_Aligned_Version``) from its raw annotation files.

Layout: ``<root>/Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/<class>_<k>.txt``
(or ``root`` itself is that folder), each line ``x y z r g b``. Every room is parsed once into a
per-room cache ``<cache_dir>/s3dis_<13|14>c/Area_N/<room>.npz`` (written atomically, with a progress
bar in ``prepare_data``), keyed by its inputs (file names, sizes, modification times, class table,
malformed-line policy): a changed annotation file rebuilds its room.

The release holds a few malformed lines (a non-numeric byte inside a number, e.g. in
Area_5/hallway_6 and Area_3/hallway_2). ``malformed="repair"`` deletes the stray bytes (a line
that still does not read as 6 numbers is dropped) and warns with the counts and the first file
and line; ``malformed="error"`` raises naming the file, line and byte.

Classes: 13 by default (stairs counted as clutter, the common convention) or the official code's
14 (``classes=14``: its alphabetical table, stairs a class of its own). Test area selectable
(``test_area``, 5 by default): validation and test are the test area, training the other areas.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from i2p.io import atomic_save_npz

from .segmentation import SegmentationDataModule

__all__ = ["S3DIS_CLASSES", "S3DIS_OFFICIAL_CLASSES", "RELEASE_DIR", "MALFORMED", "parse_annotation",
           "annotation_class", "S3DIS"]

S3DIS_CLASSES = ["ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
                 "board", "clutter"]
S3DIS_OFFICIAL_CLASSES = ["clutter", "beam", "board", "bookcase", "ceiling", "chair", "column", "door", "floor", "sofa",
                          "stairs", "table", "wall", "window"]
RELEASE_DIR = "Stanford3dDataset_v1.2_Aligned_Version"
MALFORMED = ("repair", "error")
CACHE_VERSION = 1
_NUMERIC = np.zeros(256, dtype=bool)
_NUMERIC[np.frombuffer(b"0123456789+-.eE \t\r\n", np.uint8)] = True


def _line_of(data: bytes, pos: int) -> int:
    """1-based line number of byte ``pos``."""
    return data.count(b"\n", 0, pos) + 1


def parse_annotation(path: str | Path, malformed: str = "repair") -> tuple[np.ndarray, dict[str, Any]]:
    """``x y z r g b`` lines -> float64 ``[n, 6]`` and a report ``{"repaired": [...], "dropped": [...]}``
    (1-based line numbers). See the module docstring for ``malformed``.
    """
    if malformed not in MALFORMED:
        raise ValueError(f"malformed must be one of {MALFORMED}, got {malformed!r}")
    path = Path(path)
    data = path.read_bytes()
    raw = np.frombuffer(data, np.uint8)
    bad = np.flatnonzero(~_NUMERIC[raw])
    report: dict[str, Any] = {"repaired": [], "dropped": [], "first_byte": None}
    if len(bad):
        first = int(bad[0])
        if malformed == "error":
            raise ValueError(f"{path}, line {_line_of(data, first)}: non-numeric byte {data[first:first + 1]!r}; "
                             "expected 6 numbers 'x y z r g b' (malformed='repair' deletes such bytes)")
        newlines = np.flatnonzero(raw == 10)
        report["repaired"] = sorted({int(i) + 1 for i in np.searchsorted(newlines, bad)})
        report["first_byte"] = data[first:first + 1]
        keep = np.ones(len(raw), dtype=bool)
        keep[bad] = False
        data = raw[keep].tobytes()
    try:
        table = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2)
        if table.shape[1] != 6:
            raise ValueError(f"{table.shape[1]} columns")
    except ValueError:
        table, dropped = _parse_lines(path, data, malformed)
        report["dropped"] = dropped
    if table.shape[0] == 0:
        raise ValueError(f"{path}: no points; expected lines of 6 numbers 'x y z r g b'")
    if not np.isfinite(table).all():
        row = int(np.flatnonzero(~np.isfinite(table).all(1))[0])
        raise ValueError(f"{path}: NaN/Inf in data row {row + 1}; expected finite 'x y z r g b'")
    return table, report


def _parse_lines(path: Path, data: bytes, malformed: str) -> tuple[np.ndarray, list[int]]:
    """The slow path, line by line: keep lines of exactly 6 numbers; drop (repair) or raise on others."""
    rows, dropped = [], []
    for number, line in enumerate(data.split(b"\n"), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 6:
            if malformed == "error":
                raise ValueError(f"{path}, line {number}: {line[:80]!r} has {len(fields)} field(s); expected 6 "
                                 "numbers 'x y z r g b'") from None
            dropped.append(number)
            continue
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6), dropped


def annotation_class(path: Path, classes: Sequence[str]) -> int:
    """Class id of ``<class>_<k>.txt``; stairs -> clutter in the 13-class table. ValueError names the file."""
    name = path.stem.rsplit("_", 1)[0]
    if name == "stairs" and "stairs" not in classes:
        name = "clutter"
    if name not in classes:
        raise ValueError(f"{path}: unknown class {name!r} in the file name; expected <class>_<k>.txt with a class of "
                         f"{list(classes)} (or stairs)")
    return list(classes).index(name)


class S3DIS(SegmentationDataModule):
    """Stanford 3D Indoor Scenes, whole rooms (the official recipe's data, docs/recipes.md).

    Args:
        root: folder holding ``Stanford3dDataset_v1.2_Aligned_Version`` (or that folder itself).
        test_area: the area for validation and test (5, the usual); training uses the other ``areas``.
        areas: the areas of the release to use (all six by default).
        classes: 13 (default) or 14 (the official code's table, stairs a class).
        malformed: ``repair`` (delete stray bytes, warn with counts) or ``error`` (raise, naming file and line).
        cache_dir: where the per-room caches go (default ``<root>/i2p_cache``).
        **kwargs: ``SegmentationDataModule`` arguments; defaults are the official recipe (voxel 0.05,
            features ``voxel_xyz+rgb_centred``, the ``s3dis`` augmentation with the 8 m crop, batch 3).
    """

    def __init__(self, root: str = "data/s3dis", test_area: int = 5, areas: Sequence[int] = (1, 2, 3, 4, 5, 6),
                 classes: int = 13, malformed: str = "repair", cache_dir: str | None = None,
                 features: str = "voxel_xyz+rgb_centred", voxel_size: float = 0.05, augmentation: Any = "s3dis",
                 batch_size: int = 3, **kwargs: Any) -> None:
        if classes not in (13, 14):
            raise ValueError(f"classes must be 13 or 14 (the official table), got {classes}")
        if malformed not in MALFORMED:
            raise ValueError(f"malformed must be one of {MALFORMED}, got {malformed!r}")
        if test_area not in areas:
            raise ValueError(f"test_area {test_area} is not among areas {list(areas)}")
        if kwargs.get("class_names") is None:  # the table follows `classes`
            kwargs["class_names"] = S3DIS_CLASSES if classes == 13 else S3DIS_OFFICIAL_CLASSES
        super().__init__(features=features, voxel_size=voxel_size, augmentation=augmentation, batch_size=batch_size,
                         **kwargs)
        self.root, self.test_area, self.areas = Path(root), int(test_area), [int(a) for a in areas]
        self.classes, self.malformed = classes, malformed
        self.cache_root = Path(cache_dir) if cache_dir else self.root / "i2p_cache"

    # ------------------------------------------------------------------ layout
    def release_dir(self) -> Path:
        for d in (self.root / RELEASE_DIR, self.root):
            if any(d.glob("Area_*")):
                return d
        raise FileNotFoundError(f"S3DIS: no Area_N folders under {self.root.resolve()}; expected "
                                f"{RELEASE_DIR}/Area_N/<room>/Annotations/<class>_<k>.txt (download the aligned "
                                "release and unzip it into root)")

    def rooms_of(self, area: int) -> list[tuple[int, str]]:
        d = self.release_dir() / f"Area_{area}"
        if not d.is_dir():
            raise FileNotFoundError(f"S3DIS: {d} missing; expected {RELEASE_DIR}/Area_{area}/<room>/Annotations/ "
                                    f"(areas={self.areas})")
        rooms = sorted(p.parent.name for p in d.glob("*/Annotations") if p.is_dir())
        if not rooms:
            raise FileNotFoundError(f"S3DIS: no <room>/Annotations folders in {d}")
        return [(area, r) for r in rooms]

    def list_samples(self, split: str) -> list:
        areas = [a for a in self.areas if a != self.test_area] if split == "train" else [self.test_area]
        return [room for a in areas for room in self.rooms_of(a)]

    def room_dir(self, item: tuple[int, str]) -> Path:
        return self.release_dir() / f"Area_{item[0]}" / item[1]

    def describe_sample(self, item: tuple[int, str]) -> str:
        return f"S3DIS room {self.room_dir(item)}"

    # ------------------------------------------------------------------ per-room cache
    def annotation_files(self, item: tuple[int, str]) -> list[Path]:
        files = sorted((self.room_dir(item) / "Annotations").glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"S3DIS: no <class>_<k>.txt files in {self.room_dir(item) / 'Annotations'}")
        return files

    def cache_path(self, item: tuple[int, str]) -> Path:
        return self.cache_root / f"s3dis_{self.classes}c" / f"Area_{item[0]}" / f"{item[1]}.npz"

    def cache_key(self, item: tuple[int, str]) -> str:
        """Digest of everything the cached room depends on (files, sizes, mtimes, classes, policy)."""
        stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in self.annotation_files(item)]
        blob = json.dumps([CACHE_VERSION, self.classes, self.malformed, stats])
        return hashlib.sha1(blob.encode()).hexdigest()

    def _cached(self, item: tuple[int, str], key: str) -> dict | None:
        path = self.cache_path(item)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                if str(z["key"]) != key:
                    return None
                return {k: z[k] for k in ("points", "colors", "label")}
        except (OSError, ValueError, KeyError):
            return None  # unreadable (e.g. an older format): rebuilt

    def build_room(self, item: tuple[int, str]) -> dict:
        """Parse a room's annotation files and write its cache (atomic); warns about repaired lines."""
        key = self.cache_key(item)
        points, colors, labels, repaired, dropped, first = [], [], [], 0, 0, None
        for f in self.annotation_files(item):
            table, report = parse_annotation(f, self.malformed)
            cls = annotation_class(f, self.class_names)
            if report["repaired"] or report["dropped"]:
                repaired, dropped = repaired + len(report["repaired"]), dropped + len(report["dropped"])
                line = (report["repaired"] or report["dropped"])[0]
                first = first or f"{f}, line {line}" + (f" (byte {report['first_byte']!r})" if report["first_byte"]
                                                         else "")
            rgb = table[:, 3:]
            if rgb.min() < 0 or rgb.max() > 255:
                raise ValueError(f"{f}: colours outside 0..255 (min {rgb.min()}, max {rgb.max()}); expected 'x y z r g "
                                 "b' with 8-bit colours")
            points.append(table[:, :3].astype(np.float32))
            colors.append(np.round(rgb).astype(np.uint8))
            labels.append(np.full(len(table), cls, np.int16))
        if repaired or dropped:
            warnings.warn(f"S3DIS {self.room_dir(item)}: {repaired} malformed line(s) repaired, {dropped} dropped "
                          f"(first: {first})", stacklevel=2)
        room = {"points": np.concatenate(points), "colors": np.concatenate(colors), "label": np.concatenate(labels)}
        atomic_save_npz(self.cache_path(item), key=np.array(key), **room)
        return room

    def load_room(self, item: tuple[int, str]) -> dict:
        return self._cached(item, self.cache_key(item)) or self.build_room(item)

    def prepare_data(self) -> None:
        """Build the caches of every room not cached (or changed), with a progress bar; once per node."""
        from rich.progress import track

        items = [room for a in self.areas for room in self.rooms_of(a)]
        todo = [it for it in items if self._cached(it, self.cache_key(it)) is None]
        for item in track(todo, description=f"S3DIS: parsing {len(todo)} room(s)", disable=not todo):
            self.build_room(item)

    def read_sample(self, item: tuple[int, str]) -> dict:
        room = self.load_room(item)
        return {"points": room["points"], "colors": room["colors"].astype(np.float32) / 255.0,
                "label": room["label"].astype(np.int64)}
