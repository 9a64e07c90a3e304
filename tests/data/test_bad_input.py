"""Bad input, table-driven: every reader refuses broken data with one error naming the file (or sample),
the field and what was expected, or repairs it (derived caches only) with a warning saying what it did.

Adding a reader's cases: append ``Case`` rows to ``CASES`` (or ``Repair`` rows to ``REPAIRS``). A row's
``make(tmp_path)`` writes the bad input and returns ``(call, culprit)``: ``call()`` must raise ``error``
with a message matching ``expect`` (a regex) and containing ``culprit`` (the file path or sample
description the user must look at; None when the input is an argument). The CLI's rows are in
tests/cli/test_bad_input.py; ``benchmarks/bad_input_table.py`` counts both tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datamodules import ModelNet10, ModelNet40, ScanObjectNN, SyntheticShapes, VoxelDataModule
from datamodules import modelnet as mn
from i2p import io
from tests.data.test_readers import write_modelnet_h5, write_raw, write_scanobjectnn

Make = Callable[[Path], tuple[Callable[[], Any], "str | Path | None"]]


@dataclass(frozen=True)
class Case:
    id: str
    make: Make
    expect: str
    error: type[BaseException] = ValueError


@dataclass(frozen=True)
class Repair:
    """A derived file that is rebuilt rather than refused: ``call()`` warns (``expect``) and ``check`` passes."""

    id: str
    make: Callable[[Path], tuple[Callable[[], Any], Callable[[Any], bool]]]
    expect: str


# ----------------------------------------------------------------------------- builders
def _npy(tmp, array, name="cloud.npy", allow_pickle=False):
    path = tmp / name
    np.save(path, array, allow_pickle=allow_pickle)
    return (lambda: io.read_point_cloud(path)), path


def _text(tmp, text, name):
    path = tmp / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _pc(tmp, text, name):
    path = _text(tmp, text, name)
    return (lambda: io.read_point_cloud(path)), path


def _off(tmp, text):
    path = _text(tmp, text, "chair_0001.off")
    return (lambda: io.read_off(path)), path


def _cloud(n=10):
    return np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)


def _npz(tmp, name="cloud.npz", **arrays):
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _mn_h5(tmp, field_overrides, split_file="train0"):
    write_modelnet_h5(tmp, sizes=(("train0", 4), ("test0", 4)), points=8, **{split_file: field_overrides})
    return (lambda: ModelNet40(root=str(tmp)).arrays("train")), tmp / mn.H5_DIR / f"ply_data_{split_file}.h5"


def _mn_h5_cut(tmp):
    d = write_modelnet_h5(tmp, sizes=(("train0", 4), ("test0", 4)), points=8)
    return (lambda: ModelNet40(root=str(tmp)).arrays("train")), _cut(d / "ply_data_train0.h5")


def _mn_listing(tmp):
    d = write_modelnet_h5(tmp, sizes=(("train0", 4), ("test0", 4)), points=8)
    (d / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train7.h5\n")
    return (lambda: ModelNet40(root=str(tmp)).arrays("train")), d / "train_files.txt"


def _mn_names(tmp):
    d = write_modelnet_h5(tmp, sizes=(("train0", 4), ("test0", 4)), points=8)
    io.write_label_file(d / "shape_names.txt", list(reversed(mn.MODELNET40_CLASSES)))
    return (lambda: ModelNet40(root=str(tmp)).arrays("train")), d / "shape_names.txt"


def _mn_off(tmp, broken: str | None = None, drop_split: bool = False):
    write_raw(tmp, mn.MODELNET10_CLASSES)
    bad = tmp / "ModelNet40" / "bed" / "train" / "bed_0001.off"
    if broken is not None:
        bad.write_text(broken)
    if drop_split:
        for f in (tmp / "ModelNet40" / "sofa" / "test").iterdir():
            f.unlink()
        bad = tmp / "ModelNet40" / "sofa" / "test"
    split = "test" if drop_split else "train"
    return (lambda: ModelNet10(root=str(tmp), format="off", mesh_points=16).arrays(split)), bad


SO_TRAIN = "main_split/training_objectdataset_augmentedrot_scale75.h5"


def _so(tmp, **override):
    write_scanobjectnn(tmp, SO_TRAIN, n=6, points=8, **override)
    return (lambda: ScanObjectNN(root=str(tmp)).arrays("train")), tmp / SO_TRAIN


def _so_cut(tmp):
    write_scanobjectnn(tmp, SO_TRAIN, n=6, points=8)
    return (lambda: ScanObjectNN(root=str(tmp)).arrays("train")), _cut(tmp / SO_TRAIN)


class _Samples(VoxelDataModule):
    """A data set whose one sample is whatever the row hands it (``read_sample`` output)."""

    class_names = ["a", "b"]

    def __init__(self, sample: dict, **kw: Any) -> None:
        super().__init__(augmentation="none", **kw)
        self.sample = sample

    def list_samples(self, split):
        return ["scan_0007.ply"]

    def read_sample(self, item):
        return dict(self.sample)

    def describe_sample(self, item):
        return f"/data/{item}"


def _sample(sample: dict, **kw: Any):
    return (lambda: _Samples(sample, **kw).dataset("val")[0]), "/data/scan_0007.ply"


def _setting(**kw: Any):
    return (lambda: _Samples({"points": _cloud(), "label": 0}, **kw).items("train")), None


def _synthetic(**kw: Any):
    return (lambda: SyntheticShapes(**kw)), None


# ----------------------------------------------------------------------------- the table
CASES = [
    # read_point_cloud: numpy formats
    Case("pc-missing", lambda t: ((lambda: io.read_point_cloud(t / "nope.npy")), t / "nope.npy"), "not found",
         FileNotFoundError),
    Case("pc-unknown-format", lambda t: _pc(t, "1 2 3\n", "cloud.las"), r"unsupported point-cloud format '\.las'"),
    Case("pc-npy-2-columns", lambda t: _npy(t, np.zeros((10, 2), np.float32)), r"shape \(10, 2\), expected \[P, 3\+\]"),
    Case("pc-npy-empty", lambda t: _npy(t, np.zeros((0, 3), np.float32)), "empty point cloud"),
    Case("pc-npy-nan", lambda t: _npy(t, np.where(np.eye(10, 3) > 0, np.nan, _cloud())), "'points'.*NaN/Inf"),
    Case("pc-npy-strings", lambda t: _npy(t, np.array([["a", "b", "c"]])), "dtype <U1, expected floating point"),
    Case("pc-npy-beyond-float32", lambda t: _npy(t, _cloud().astype(np.float64) * 1e40), "beyond the float32 range"),
    Case("pc-npy-pickle", lambda t: _npy(t, np.array([{"x": 1}], dtype=object), allow_pickle=True),
         r"pickled \(object\) arrays are refused"),
    Case("pc-npy-truncated", lambda t: (lambda f, p: (f, _cut(p)))(*_npy(t, _cloud(1000))), "cannot parse point cloud"),
    Case("pc-npz-no-points", lambda t: (lambda p: ((lambda: io.read_point_cloud(p)), p))(_npz(t, xyz=_cloud())),
         r"field 'points' missing \(has \['xyz'\]\)"),
    Case("pc-npz-truncated", lambda t: (lambda p: ((lambda: io.read_point_cloud(p)), _cut(p)))(_npz(t, points=_cloud(500))),
         "cannot read the .npz archive"),
    Case("pc-npz-colors-shape",
         lambda t: (lambda p: ((lambda: io.read_point_cloud(p)), p))(_npz(t, points=_cloud(), colors=_cloud(5))),
         r"field 'colors' has shape \(5, 3\), expected \(10, 3\)"),
    Case("pc-txt-garbage", lambda t: _pc(t, "x y z\n1 2 3\n", "cloud.txt"), "cannot parse point cloud"),
    Case("pc-xyz-2-columns", lambda t: _pc(t, "1 2\n3 4\n", "cloud.xyz"), r"expected \[P, 3\+\]"),
    Case("pc-csv-inf", lambda t: _pc(t, "1,2,3\n4,inf,6\n", "cloud.csv"), "NaN/Inf"),
    # read_point_cloud: open3d formats
    Case("pc-ply-empty-file", lambda t: _pc(t, b"", "cloud.ply"), "open3d read no points"),
    Case("pc-ply-truncated", lambda t: _pc(t, "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\n", "cloud.ply"),
         "open3d read no points"),
    Case("pc-pcd-garbage", lambda t: _pc(t, b"\x00\x01garbage", "cloud.pcd"), "open3d read no points"),
    # OFF meshes
    Case("off-missing", lambda t: ((lambda: io.read_off(t / "nope.off")), t / "nope.off"), "not found", FileNotFoundError),
    Case("off-empty", lambda t: _off(t, ""), "not an OFF file"),
    Case("off-binary", lambda t: _off(t, b"\x89PNG\r\n\x1a\n\x00\x00"), "not an OFF file"),
    Case("off-bad-header", lambda t: _off(t, "OFFx y z\n"), "bad OFF header"),
    Case("off-no-vertices", lambda t: _off(t, "OFF\n0 0 0\n"),
         "OFF header says 0 vertices and 0 faces, expected at least one vertex"),
    Case("off-truncated", lambda t: _off(t, "OFF\n8 12 0\n0 0 0\n"), "truncated OFF file"),
    Case("off-face-out-of-range", lambda t: _off(t, "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n"), "out of range"),
    Case("off-nan-vertex", lambda t: _off(t, "OFF\n3 1 0\n0 0 nan\n1 0 0\n0 1 0\n3 0 1 2\n"), "NaN/Inf"),
    Case("off-short-vertex", lambda t: _off(t, "OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n"), "three numbers"),
    Case("off-bad-face", lambda t: _off(t, "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 x 2\n"), "bad OFF face line 0"),
    # label files
    Case("labels-missing", lambda t: ((lambda: io.read_label_file(t / "shape_names.txt")), t / "shape_names.txt"),
         "label file not found", FileNotFoundError),
    Case("labels-empty", lambda t: (lambda p: ((lambda: io.read_label_file(p)), p))(_text(t, "\n\n", "names.txt")),
         "is empty: expected one class name per line"),
    Case("labels-repeated", lambda t: (lambda p: ((lambda: io.read_label_file(p)), p))(_text(t, "a\nb\na\n", "n.txt")),
         "repeats class names"),
    # ModelNet40, HDF5 release
    Case("mn-h5-missing", lambda t: ((lambda: ModelNet40(root=str(t)).arrays("train")), str(t.resolve())),
         "not found under .*Get it with download: true", FileNotFoundError),
    Case("mn-h5-listed-file-missing", _mn_listing, "lists files that are missing.*ply_data_train7.h5",
         FileNotFoundError),
    Case("mn-h5-class-names", _mn_names, "class names differ from the ModelNet40 table"),
    Case("mn-h5-truncated", _mn_h5_cut, r"cannot read HDF5 file \(truncated or corrupt\?\)"),
    Case("mn-h5-field-renamed", lambda t: _mn_h5(t, {"data": None, "points": np.zeros((4, 8, 3), np.float32)}),
         r"field 'data' missing \(has \['label', 'normal', 'points'\]\)"),
    Case("mn-h5-shape", lambda t: _mn_h5(t, {"data": np.zeros((4, 8, 2), np.float32), "normal": None}),
         r"field 'data' has shape \(4, 8, 2\), expected \[N, P, 3\]"),
    Case("mn-h5-int-points", lambda t: _mn_h5(t, {"data": np.ones((4, 8, 3), np.int32)}),
         "field 'data' has dtype int32, expected floating point"),
    Case("mn-h5-nan", lambda t: _mn_h5(t, {"data": np.full((4, 8, 3), np.nan, np.float32)}),
         r"NaN/Inf coordinates in 4 sample\(s\)"),
    Case("mn-h5-no-samples", lambda t: _mn_h5(t, {"data": np.zeros((0, 8, 3), np.float32),
                                                  "label": np.zeros((0, 1), np.uint8), "normal": None}),
         "holds no samples"),
    Case("mn-h5-empty-clouds", lambda t: _mn_h5(t, {"data": np.zeros((4, 0, 3), np.float32), "normal": None}),
         r"empty point clouds \(P = 0\)"),
    Case("mn-h5-label-range", lambda t: _mn_h5(t, {"label": np.full((4, 1), 40, np.uint8)}),
         r"field 'label' value 40 at sample 0 out of range, expected labels in \[0, 40\)"),
    Case("mn-h5-label-fraction", lambda t: _mn_h5(t, {"label": np.full((4, 1), 1.5, np.float32)}),
         "expected integer class ids"),
    Case("mn-h5-label-shape", lambda t: _mn_h5(t, {"label": np.zeros((4, 2), np.uint8)}),
         r"field 'label' has shape \(4, 2\), expected \[4\] or \[4, 1\]"),
    Case("mn-h5-normal-shape", lambda t: _mn_h5(t, {"normal": np.zeros((4, 8, 2), np.float32)}),
         r"field 'normal' has shape \(4, 8, 2\)"),
    # ModelNet, raw OFF meshes
    Case("mn-off-split-empty", lambda t: _mn_off(t, drop_split=True), "no .off meshes in", FileNotFoundError),
    Case("mn-off-broken-mesh", lambda t: _mn_off(t, broken="OFF\n8 12 0\n0 0 0\n"), "truncated OFF file"),
    # ScanObjectNN
    Case("so-missing", lambda t: ((lambda: ScanObjectNN(root=str(t)).arrays("train")), SO_TRAIN),
         "expected main_split/training_objectdataset_augmentedrot_scale75.h5 under", FileNotFoundError),
    Case("so-unknown-variant", lambda t: ((lambda: ScanObjectNN(root=str(t), variant="PB_T99")), None),
         "unknown ScanObjectNN variant 'PB_T99'"),
    Case("so-truncated", _so_cut, "cannot read HDF5 file"),
    Case("so-mask-shape", lambda t: _so(t, mask=np.ones((6, 4), np.int32)), r"field 'mask' has shape \(6, 4\)"),
    Case("so-label-range", lambda t: _so(t, label=np.arange(6) + 10), r"value 15 at sample 5 out of range.*\[0, 15\)"),
    # SyntheticShapes settings
    Case("syn-unknown-class", lambda t: _synthetic(classes=["sphere", "dragon"]), "choose at least two of"),
    Case("syn-empty-split", lambda t: _synthetic(num_val=0), "must be >= 1"),
    Case("syn-class-names", lambda t: _synthetic(class_names=["x", "y"]), "takes its class table from `classes`"),
    # VoxelDataModule settings
    Case("vdm-voxel-size", lambda t: _setting(voxel_size=0), "voxel_size must be > 0, got 0"),
    Case("vdm-batch-size", lambda t: _setting(batch_size=0), "batch_size must be >= 1, got 0"),
    Case("vdm-subset-exclusive", lambda t: _setting(few_shot=1, train_fraction=0.5), "exclusive"),
    Case("vdm-features", lambda t: _setting(features="xyz+colour"), r"unknown part\(s\) \['colour'\]"),
    Case("vdm-few-shot", lambda t: _setting(few_shot=0), "few_shot must be >= 1"),
    Case("vdm-fraction", lambda t: _setting(train_fraction=1.5), r"train_fraction must be in \(0, 1\]"),
    # what read_sample returns (every reader's samples pass through PointCloudDataset.check)
    Case("sample-keys", lambda t: _sample({"points": _cloud()}), "must return a dict with 'points' and 'label'"),
    Case("sample-label-range", lambda t: _sample({"points": _cloud(), "label": 7}), r"holds 7..7, expected in \[0, 2\)"),
    Case("sample-label-negative", lambda t: _sample({"points": _cloud(), "label": -1}), r"expected in \[0, 2\)"),
    Case("sample-label-dtype", lambda t: _sample({"points": _cloud(), "label": 0.5}), "expected integer class ids"),
    Case("sample-label-length", lambda t: _sample({"points": _cloud(), "label": np.zeros(4, np.int64)}),
         r"expected a scalar or \[10\]"),
    Case("sample-empty", lambda t: _sample({"points": np.zeros((0, 3)), "label": 0}), "empty point cloud"),
    Case("sample-inf", lambda t: _sample({"points": np.full((4, 3), np.inf), "label": 0}), "NaN/Inf"),
    Case("sample-shape", lambda t: _sample({"points": np.zeros((4, 4)), "label": 0}), r"expected \[P, 3\]"),
    Case("sample-one-point-repeated", lambda t: _sample({"points": np.ones((5, 3)), "label": 0}),
         r"all 5 points at \[1.0, 1.0, 1.0\]"),
    Case("sample-colors-shape", lambda t: _sample({"points": _cloud(), "label": 0, "colors": np.zeros((3, 3))}),
         r"field 'colors' has shape \(3, 3\)"),
    Case("sample-feature-field", lambda t: _sample({"points": _cloud(), "label": 0}, features="xyz+rgb"),
         "need field 'colors'"),
    Case("sample-overflows-voxel-grid", lambda t: _sample({"points": _cloud() * 1e12, "label": 0}, normalize=False),
         r"beyond the voxel grid \(2\^30 per axis\)"),
]


def _mn_cache_stale(tmp):
    write_raw(tmp, mn.MODELNET10_CLASSES)
    ModelNet10(root=str(tmp), format="off", mesh_points=16).arrays("train")
    extra = tmp / "ModelNet40" / "chair" / "train" / "chair_0002.off"
    extra.write_bytes((tmp / "ModelNet40" / "chair" / "train" / "chair_0001.off").read_bytes())
    return (lambda: ModelNet10(root=str(tmp), format="off", mesh_points=16).arrays("train")), \
        lambda a: len(a["label"]) == 11


def _mn_cache_cut(tmp):
    write_raw(tmp, mn.MODELNET10_CLASSES)
    ModelNet10(root=str(tmp), format="off", mesh_points=16).arrays("train")
    _cut(tmp / "modelnet10_off_train_16pts.npz")
    return (lambda: ModelNet10(root=str(tmp), format="off", mesh_points=16).arrays("train")), \
        lambda a: len(a["label"]) == 10


def _synthetic_cache_cut(tmp):
    from datamodules import synthetic

    kw = dict(num_train=4, num_val=2, num_test=2, points_per_shape=64, num_points=64, cache_dir=str(tmp), data_seed=5)
    reference = SyntheticShapes(**kw).arrays("train")["points"].copy()
    synthetic._MEMORY.clear()
    for f in tmp.glob("synthetic_train_*.npz"):
        _cut(f)
    return (lambda: SyntheticShapes(**kw).arrays("train")), lambda a: np.array_equal(a["points"], reference)


REPAIRS = [
    Repair("mn-off-cache-meshes-added", _mn_cache_stale, r"built from 10 meshes, the folder now has 11 \(1 added"),
    Repair("mn-off-cache-truncated", _mn_cache_cut, r"modelnet10_off_train_16pts.npz: unreadable \(truncated"),
    Repair("synthetic-cache-truncated", _synthetic_cache_cut, "unreadable cache .*regenerating it"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named(tmp_path, case):
    call, culprit = case.make(tmp_path)
    with pytest.raises(case.error) as e:
        call()
    message = str(e.value)
    assert re.search(case.expect, message), f"{case.id}: {message!r} does not match {case.expect!r}"
    if culprit is not None:
        assert str(culprit) in message, f"{case.id}: {message!r} does not name {culprit}"


@pytest.mark.parametrize("case", REPAIRS, ids=[c.id for c in REPAIRS])
def test_derived_files_are_repaired_with_a_warning(tmp_path, case):
    call, check = case.make(tmp_path)
    with pytest.warns(UserWarning, match=case.expect):
        result = call()
    assert check(result), case.id


def test_absurd_scales_normalise_to_the_same_voxels():
    """A cloud in metres, in 1e20 units or in 1e-20 units: the same unit-sphere voxels (it used to
    overflow float32 and collapse onto one voxel at the origin).
    """
    pts = _cloud(200) + np.float32([3, -1, 2])
    coords = [_Samples({"points": pts.astype(np.float64) * s, "label": 1}, voxel_size=0.1).dataset("val")[0]["coords"]
              for s in (1.0, 1e20, 1e-20)]
    assert len(coords[0]) > 20
    assert all(torch.equal(coords[0], c) for c in coords[1:])
