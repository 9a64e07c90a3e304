"""The segmentation readers on small files written here in the true on-disk layouts (docs/datasets.md):
S3DIS (malformed lines, per-room cache), SemanticKITTI (instance bits, learning map, unlabelled test
sequences, voxel cap), ShapeNetPart (split json, categories).
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest

from datamodules import S3DIS, SemanticKITTI, ShapeNetPart
from datamodules.s3dis import S3DIS_CLASSES, S3DIS_OFFICIAL_CLASSES, parse_annotation
from datamodules.semantic_kitti import KITTI_CLASSES
from datamodules.shapenet_part import SHAPENET_PARTS, SHAPENET_SYNSETS

RELEASE = "Stanford3dDataset_v1.2_Aligned_Version"


# ----------------------------------------------------------------------------- S3DIS
def _write_annotation(path, n, offset, rng, bad_line: int | None = None):
    pts = rng.uniform(0, 3, (n, 3)) + offset
    rgb = rng.integers(0, 256, (n, 3))
    lines = [f"{x:.3f} {y:.3f} {z:.3f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(pts, rgb)]
    if bad_line is not None:  # the release's quirk: a stray non-numeric byte inside a number
        lines[bad_line - 1] = lines[bad_line - 1].replace(".", ".\x10", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return pts


def _s3dis(tmp_path, bad_line: int | None = 4):
    rng = np.random.default_rng(0)
    root = tmp_path / "s3dis" / RELEASE
    _write_annotation(root / "Area_1" / "office_1" / "Annotations" / "ceiling_1.txt", 30, 0, rng)
    _write_annotation(root / "Area_1" / "office_1" / "Annotations" / "stairs_1.txt", 10, 1, rng)
    _write_annotation(root / "Area_1" / "office_2" / "Annotations" / "chair_1.txt", 20, 0, rng)
    _write_annotation(root / "Area_5" / "hallway_6" / "Annotations" / "ceiling_1.txt", 25, 0, rng, bad_line=bad_line)
    _write_annotation(root / "Area_5" / "hallway_6" / "Annotations" / "wall_2.txt", 15, 0.5, rng)
    (root / "Area_5" / "hallway_6" / "hallway_6.txt").write_text("the whole room, not read\n")
    return tmp_path / "s3dis", root


def test_s3dis_malformed_line_repaired_with_a_warning_or_rejected_naming_file_and_line(tmp_path):
    root, release = _s3dis(tmp_path, bad_line=4)
    bad = release / "Area_5" / "hallway_6" / "Annotations" / "ceiling_1.txt"
    with pytest.raises(ValueError, match=r"ceiling_1\.txt, line 4: non-numeric byte b'\\x10'"):
        parse_annotation(bad, "error")
    table, report = parse_annotation(bad, "repair")
    assert table.shape == (25, 6) and report["repaired"] == [4] and report["dropped"] == []
    dm = S3DIS(root=str(root), areas=(1, 5), test_area=5, malformed="repair")
    warning = r"1 malformed line\(s\) repaired, 0 dropped \(first: .*ceiling_1\.txt, line 4"
    with pytest.warns(UserWarning, match=warning):
        dm.prepare_data()
    with pytest.raises(ValueError, match="line 4"):
        S3DIS(root=str(root), areas=(1, 5), malformed="error", cache_dir=str(tmp_path / "c2")).prepare_data()
    # a line that stays unreadable after the repair is dropped and counted
    (release / "Area_1" / "office_2" / "Annotations" / "chair_1.txt").open("a").write("1.0 2.0 3.0 4 5\n")
    table, report = parse_annotation(release / "Area_1" / "office_2" / "Annotations" / "chair_1.txt")
    assert table.shape == (20, 6) and report["dropped"] == [21]


def test_s3dis_rooms_classes_splits_and_every_point_in_evaluation(tmp_path):
    root, release = _s3dis(tmp_path, bad_line=None)
    dm = S3DIS(root=str(root), areas=(1, 5), test_area=5, voxel_size=0.5)
    assert dm.num_classes == 13 and dm.in_channels == 6
    assert dm.list_samples("train") == [(1, "office_1"), (1, "office_2")]
    assert dm.list_samples("val") == dm.list_samples("test") == [(5, "hallway_6")]
    office = dm.read_sample((1, "office_1"))
    assert office["points"].shape == (40, 3) and office["colors"].max() <= 1.0
    assert set(office["label"].tolist()) == {S3DIS_CLASSES.index("ceiling"), S3DIS_CLASSES.index("clutter")}
    official = S3DIS(root=str(root), areas=(1, 5), classes=14, cache_dir=str(tmp_path / "c14"))
    assert official.num_classes == 14 and S3DIS_OFFICIAL_CLASSES.index("stairs") in official.read_sample(
        (1, "office_1"))["label"]
    sample = dm.dataset("test")[0]  # evaluation: every point, centred voxel coordinates + rgb - 0.5
    assert sample["label"].shape == (40,) and sample["inverse"].shape == (40,)
    assert sample["feats"].shape == (len(sample["coords"]), 6)
    np.testing.assert_allclose(sample["feats"][:, :3].mean(0).numpy(), 0, atol=1e-5)
    assert sample["feats"][:, 3:].min() >= -0.5 and sample["feats"][:, 3:].max() <= 0.5
    with pytest.raises(FileNotFoundError, match="Area_3"):
        S3DIS(root=str(root), areas=(1, 3, 5)).list_samples("train")
    (release / "Area_1" / "office_1" / "Annotations" / "sofabed_1.txt").write_text("0 0 0 1 2 3\n")
    with pytest.raises(ValueError, match="sofabed_1.txt: unknown class 'sofabed'"):
        dm.read_sample((1, "office_1"))


def test_s3dis_cache_is_atomic_reused_and_rebuilt_when_a_file_changes(tmp_path):
    root, release = _s3dis(tmp_path, bad_line=None)
    dm = S3DIS(root=str(root), areas=(1, 5))
    dm.prepare_data()
    cache = dm.cache_path((1, "office_2"))
    assert cache.is_file() and not list(cache.parent.glob(".*tmp*"))  # no temporary left behind
    stamp = cache.stat().st_mtime_ns
    dm.prepare_data()
    assert cache.stat().st_mtime_ns == stamp  # reused
    f = release / "Area_1" / "office_2" / "Annotations" / "chair_1.txt"
    f.write_text(f.read_text() + "0.5 0.5 0.5 10 20 30\n")
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert len(dm.read_sample((1, "office_2"))["points"]) == 21  # rebuilt from the changed file
    assert cache.stat().st_mtime_ns != stamp


# ----------------------------------------------------------------------------- SemanticKITTI
def _kitti(tmp_path, n=50):
    rng = np.random.default_rng(1)
    root = tmp_path / "kitti"
    for seq, labelled in (("00", True), ("08", True), ("11", False)):
        vel = root / "sequences" / seq / "velodyne"
        vel.mkdir(parents=True)
        for frame in range(2):
            scan = np.concatenate([rng.uniform(-20, 20, (n, 3)), rng.uniform(0, 1, (n, 1))], 1).astype(np.float32)
            scan.tofile(vel / f"{frame:06d}.bin")
            if labelled:
                (root / "sequences" / seq / "labels").mkdir(exist_ok=True)
                semantic = np.array([10, 252, 0, 40, 60, 13, 81, 52, 99, 48] * (n // 10), np.uint32)
                instance = rng.integers(1, 1000, n).astype(np.uint32)
                (semantic | (instance << 16)).tofile(root / "sequences" / seq / "labels" / f"{frame:06d}.label")
    return root


def test_kitti_low_16_bits_learning_map_splits_and_unlabelled_test_sequences(tmp_path):
    root = _kitti(tmp_path)
    dm = SemanticKITTI(root=str(root), train_sequences=["00"], predict_sequences=["11"])
    assert dm.num_classes == 19 and dm.in_channels == 4
    sample = dm.read_sample(dm.list_samples("val")[0])
    ign = dm.ignore_index
    car, road, sign, sidewalk = (KITTI_CLASSES.index(c) for c in ("car", "road", "traffic-sign", "sidewalk"))
    other_vehicle = KITTI_CLASSES.index("other-vehicle")
    # 10 car, 252 moving-car -> car, 0 -> ignore, 40 road, 60 lane-marking -> road, 13 bus -> other-vehicle,
    # 81 sign, 52 other-structure -> ignore, 99 -> ignore, 48 sidewalk; the instance bits never leak in
    assert sample["label"][:10].tolist() == [car, car, ign, road, road, other_vehicle, sign, ign, ign, sidewalk]
    assert sample["remission"].shape == (50,)
    predict = dm.dataset("predict")
    assert len(predict) == 2 and all(lab is None for _, lab in predict.items)
    assert (predict[0]["label"] == ign).all() and predict[0]["label"].shape == (50,)
    (root / "sequences" / "00" / "labels" / "000001.label").unlink()
    with pytest.raises(FileNotFoundError, match="000001.label missing"):
        dm.list_samples("train")
    (root / "sequences" / "08" / "labels" / "000000.label").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="2 labels for 50 points"):
        dm.read_sample(dm.list_samples("val")[0])


def test_kitti_voxel_cap_in_training_only(tmp_path):
    root = _kitti(tmp_path, n=200)
    dm = SemanticKITTI(root=str(root), train_sequences=["00"], max_voxels=40, voxel_size=0.5)
    train = dm.dataset("train")[0]
    assert len(train["coords"]) == 40
    assert train["inverse"].max() == 39 and len(train["label"]) == len(train["points"]) == len(train["inverse"]) < 200
    assert len(dm.dataset("val")[0]["label"]) == 200  # evaluation keeps every point


# ----------------------------------------------------------------------------- ShapeNetPart
def _shapenet(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "shapenet" / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    entries = {}
    for split, synset, ids in (("train", "02691156", ["a1", "a2"]), ("val", "03797390", ["m1"]),
                               ("test", "03797390", ["m2"])):
        cat = SHAPENET_SYNSETS[synset]
        for shape in ids:
            (root / synset).mkdir(parents=True, exist_ok=True)
            pts = rng.normal(size=(40, 6))
            part = rng.choice(SHAPENET_PARTS[cat], 40)
            np.savetxt(root / synset / f"{shape}.txt", np.concatenate([pts, part[:, None]], 1), fmt="%.6f")
        entries[split] = [f"shape_data/{synset}/{s}" for s in ids]
    (root / "train_test_split").mkdir()
    for split, e in entries.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(e))
    return tmp_path / "shapenet", root


def test_shapenet_part_categories_parts_and_split_files(tmp_path):
    root, release = _shapenet(tmp_path)
    dm = ShapeNetPart(root=str(root), voxel_size=0.2)
    assert dm.num_classes == 50 and dm.num_categories == 16 and dm.in_channels == 6
    assert dm.list_samples("train") == [("02691156", "a1"), ("02691156", "a2")]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["category"].tolist() == [0, 0] and batch["label"].max() < 4  # airplane: parts 0..3
    assert len(batch["label"]) == 80 and batch["voxel_size"] == 0.2
    (release / "train_test_split" / "shuffled_test_file_list.json").unlink()
    with pytest.raises(FileNotFoundError, match="shuffled_test_file_list.json missing"):
        ShapeNetPart(root=str(root)).list_samples("test")
    (release / "train_test_split" / "shuffled_val_file_list.json").write_text(json.dumps(["shape_data/99999999/x"]))
    with pytest.raises(ValueError, match="entry 0 .* names category '99999999', unknown"):
        ShapeNetPart(root=str(root)).list_samples("val")
    bad = release / "02691156" / "a1.txt"
    rows = np.loadtxt(bad)
    rows[5, 6] = 12  # a chair part in an airplane
    np.savetxt(bad, rows, fmt="%.6f")
    with pytest.raises(ValueError, match="a1.txt, line 6: field 'part' is 12.0, expected a part of Airplane"):
        dm.read_sample(("02691156", "a1"))


def test_missing_release_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="Area_N"):
        S3DIS(root=str(tmp_path)).list_samples("train")
    with pytest.raises(FileNotFoundError, match="velodyne"):
        SemanticKITTI(root=str(tmp_path)).list_samples("train")
    with pytest.raises(FileNotFoundError, match="train_test_split"):
        ShapeNetPart(root=str(tmp_path)).list_samples("train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="classes must be 13 or 14"):
            S3DIS(root=str(tmp_path), classes=12)
