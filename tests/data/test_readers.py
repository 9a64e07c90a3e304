"""ModelNet40/10 (h5 and raw OFF) and ScanObjectNN readers on small files in the true formats."""

import zipfile

import numpy as np
import pytest
import torch

from datamodules import ModelNet10, ModelNet40, ScanObjectNN
from datamodules import modelnet as mn
from i2p import io


def write_modelnet_h5(root, sizes=(("train0", 20), ("train1", 20), ("test0", 12)), points=32, listing=True, **overrides):
    d = root / "modelnet40_ply_hdf5_2048"
    d.mkdir(parents=True, exist_ok=True)
    io.write_label_file(d / "shape_names.txt", mn.MODELNET40_CLASSES)
    start = 0
    for name, n in sizes:
        rng = np.random.default_rng(start)
        label = ((np.arange(n) + start) % 40).astype(np.uint8)[:, None]  # [B, 1] uint8 as released
        data = rng.uniform(-1, 1, (n, points, 3)).astype(np.float32)
        arrays = {"data": data, "label": label, "normal": np.tile(np.float32([0, 0, 1]), (n, points, 1))}
        arrays.update(overrides.get(name, {}))
        io.write_h5(d / f"ply_data_{name}.h5", **{k: v for k, v in arrays.items() if v is not None})
        start += n
    if listing:
        for split in ("train", "test"):
            names = [f"data/modelnet40_ply_hdf5_2048/ply_data_{n}.h5" for n, _ in sizes if n.startswith(split)]
            (d / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    return d


def test_modelnet40_h5_reads_and_batches(tmp_path):
    write_modelnet_h5(tmp_path)
    dm = ModelNet40(root=str(tmp_path), batch_size=8, num_points=None)
    assert dm.num_classes == 40 and dm.class_names[0] == "airplane"
    a = dm.arrays("train")
    assert a["points"].shape == (40, 32, 3) and a["label"].dtype == np.int64
    np.testing.assert_array_equal(a["label"], np.arange(40) % 40)
    assert a["normals"].shape == (40, 32, 3)
    assert len(dm.items("val")) == len(dm.items("test")) == 12  # val is the test split
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape == (8 * 32, 3) and batch["x"].feats.shape[1] == 3
    normals = ModelNet40(root=str(tmp_path), features="xyz+normal", augmentation="none").dataset("test")[0]
    assert normals["feats"].shape[1] == 6


def test_modelnet40_h5_listing_and_numeric_order(tmp_path):
    d = write_modelnet_h5(tmp_path, sizes=(("train0", 4), ("train1", 4), ("train10", 4), ("test0", 2)), listing=False)
    files = ModelNet40(root=str(d)).h5_files("train")  # root may be the h5 folder itself
    assert [f.name for f in files] == ["ply_data_train0.h5", "ply_data_train1.h5", "ply_data_train10.h5"]
    (d / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train1.h5\n")
    assert [f.name for f in ModelNet40(root=str(tmp_path)).h5_files("train")] == ["ply_data_train1.h5"]
    (d / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train7.h5\n")
    with pytest.raises(FileNotFoundError, match="train_files.txt lists files that are missing.*ply_data_train7.h5"):
        ModelNet40(root=str(tmp_path)).h5_files("train")


def test_modelnet10_from_h5_filters_and_remaps(tmp_path):
    write_modelnet_h5(tmp_path, sizes=(("train0", 80), ("test0", 40)))
    dm = ModelNet10(root=str(tmp_path))
    assert dm.num_classes == 10
    a = dm.arrays("train")
    assert len(a["label"]) == 20 and sorted(set(a["label"].tolist())) == list(range(10))
    full = ModelNet40(root=str(tmp_path)).arrays("train")
    chair40 = full["points"][full["label"] == mn.MODELNET40_CLASSES.index("chair")]
    np.testing.assert_array_equal(a["points"][a["label"] == mn.MODELNET10_CLASSES.index("chair")], chair40)


def test_modelnet_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        ModelNet40(root=str(tmp_path / "nothing")).setup("fit")
    msg = str(e.value)
    assert "ply_data_train0..4.h5" in msg and str(tmp_path / "nothing") in msg
    assert mn.H5_URL in msg and "download: true" in msg and "url: a mirror" in msg and "archive:" in msg
    with pytest.raises(FileNotFoundError, match="ModelNet40.zip"):
        ModelNet40(root=str(tmp_path), format="off").items("train")


@pytest.mark.parametrize(
    "override, match",
    [
        ({"data": np.zeros((20, 32, 2), np.float32)}, r"ply_data_train1.h5: field 'data' has shape \(20, 32, 2\), expected \[N, P, 3\]"),
        ({"data": np.zeros((20, 0, 3), np.float32)}, r"ply_data_train1.h5: field 'data' has empty point clouds"),
        ({"data": np.full((20, 32, 3), np.nan, np.float32)}, r"ply_data_train1.h5: field 'data' has NaN/Inf"),
        ({"label": np.full((20, 1), 40, np.uint8)}, r"ply_data_train1.h5: field 'label' value 40.*\[0, 40\)"),
        ({"label": np.zeros((19, 1), np.uint8)}, r"ply_data_train1.h5: field 'label' has shape \(19, 1\)"),
        ({"label": None}, r"ply_data_train1.h5: field 'label' missing"),
    ],
)
def test_modelnet_h5_bad_content_names_file_and_field(tmp_path, override, match):
    write_modelnet_h5(tmp_path, **{"train1": override})
    with pytest.raises(ValueError, match=match):
        ModelNet40(root=str(tmp_path)).setup("fit")


def test_modelnet_truncated_h5_and_bad_shape_names(tmp_path):
    d = write_modelnet_h5(tmp_path)
    f = d / "ply_data_test0.h5"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"ply_data_test0.h5: cannot read HDF5 file \(truncated or corrupt"):
        ModelNet40(root=str(tmp_path)).items("test")
    (d / "shape_names.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="shape_names.txt: class names differ"):
        ModelNet40(root=str(tmp_path)).items("train")


def write_raw(root, classes, per_split=1, glued=True):
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
    for ci, c in enumerate(classes):
        for split in ("train", "test"):
            for k in range(per_split):
                stretch = np.float32([1 + ci, 1, 1 + k])
                io.write_off(root / "ModelNet40" / c / split / f"{c}_{k + 1:04d}.off", v * stretch, f, glued_header=glued)


def test_modelnet40_off_preprocess_once_and_cache(tmp_path):
    write_raw(tmp_path, mn.MODELNET40_CLASSES, per_split=1)
    dm = ModelNet40(root=str(tmp_path), format="off", mesh_points=64, num_points=64, batch_size=8)
    dm.prepare_data()
    cache = tmp_path / "modelnet40_off_train_64pts.npz"
    assert cache.is_file() and (tmp_path / "modelnet40_off_test_64pts.npz").is_file()
    a = dm.arrays("train")
    assert a["points"].shape == (40, 64, 3)
    np.testing.assert_array_equal(a["label"], np.arange(40))
    # points lie on the stretched cube of their class: x spans [0, 1 + label]
    assert np.allclose(a["points"][5, :, 0].max(), 6.0, atol=1e-4)
    # the cache is reused: raw meshes are no longer needed, same points come back
    import shutil

    shutil.rmtree(tmp_path / "ModelNet40")
    again = ModelNet40(root=str(tmp_path), format="off", mesh_points=64).arrays("train")
    np.testing.assert_array_equal(again["points"], a["points"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (8,)


def test_modelnet10_from_raw_modelnet40_dir_and_bad_mesh(tmp_path):
    write_raw(tmp_path, mn.MODELNET10_CLASSES)
    dm = ModelNet10(root=str(tmp_path), format="off", mesh_points=16)
    assert dm.arrays("test")["label"].tolist() == list(range(10))
    bad = tmp_path / "ModelNet40" / "bed" / "train" / "bed_0001.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0\n")
    with pytest.raises(ValueError, match="bed_0001.off"):
        ModelNet10(root=str(tmp_path), format="off", mesh_points=16, cache_dir=str(tmp_path / "c2")).arrays("train")


def test_modelnet_download_with_file_url(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_modelnet_h5(src, sizes=(("train0", 8), ("test0", 4)))
    archive = tmp_path / "modelnet40_ply_hdf5_2048.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (src / "modelnet40_ply_hdf5_2048").iterdir():
            z.write(f, f"modelnet40_ply_hdf5_2048/{f.name}")
    monkeypatch.setattr(mn, "H5_URL", archive.as_uri())
    root = tmp_path / "data"
    dm = ModelNet40(root=str(root), download=True)
    dm.prepare_data()
    assert (root / "modelnet40_ply_hdf5_2048" / "ply_data_train0.h5").is_file()
    assert not list(root.glob("*.zip")) and not list(root.glob(".extract_*"))
    assert len(dm.items("train")) == 8


def test_modelnet_mirror_url_checksum_and_local_archive(tmp_path, capsys):
    import functools
    import hashlib
    import http.server
    import threading

    src = tmp_path / "src"
    write_modelnet_h5(src, sizes=(("train0", 8), ("test0", 4)))
    archive = tmp_path / "mirror" / "modelnet40_ply_hdf5_2048.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for f in (src / "modelnet40_ply_hdf5_2048").iterdir():
            z.write(f, f"modelnet40_ply_hdf5_2048/{f.name}")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    mirror = f"http://127.0.0.1:{server.server_port}/{archive.name}"
    try:
        bad = ModelNet40(root=str(tmp_path / "a"), download=True, url=mirror, md5="0" * 32)
        with pytest.raises(ValueError, match="does not match md5"):
            bad.prepare_data()
        assert not list((tmp_path / "a").glob("*.zip*"))  # nothing half-written left behind

        dm = ModelNet40(root=str(tmp_path / "b"), download=True, url=mirror, md5=md5)  # torchvision's download
        dm.prepare_data()
        assert len(dm.items("train")) == 8 and not list((tmp_path / "b").glob("*.zip*"))
    finally:
        server.shutdown()

    local = ModelNet40(root=str(tmp_path / "c"), archive=str(archive), md5=md5)  # no network at all
    local.prepare_data()
    assert len(local.items("test")) == 4 and archive.is_file()  # the given zip is kept

    with pytest.raises(OSError, match="Point `url:` at a mirror"):
        ModelNet40(root=str(tmp_path / "d"), download=True, url="http://127.0.0.1:9/x.zip").prepare_data()


def write_scanobjectnn(root, variant_file, n=30, points=64, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "data": rng.normal(size=(n, points, 3)).astype(np.float32),
        "label": (np.arange(n) % 15).astype(np.int64),
        "mask": np.where(rng.random((n, points)) < 0.8, 1, -1).astype(np.int32),
    }
    arrays.update(override)
    io.write_h5(root / variant_file, **arrays)


def test_scanobjectnn_pb_t50_rs_with_mask(tmp_path):
    write_scanobjectnn(tmp_path / "h5_files", "main_split/training_objectdataset_augmentedrot_scale75.h5")
    write_scanobjectnn(tmp_path / "h5_files", "main_split/test_objectdataset_augmentedrot_scale75.h5", n=15)
    dm = ScanObjectNN(root=str(tmp_path), batch_size=5, num_points=32)
    assert dm.num_classes == 15 and dm.class_names[-1] == "toilet"
    assert len(dm.items("train")) == 30 and len(dm.items("val")) == 15
    s = dm.dataset("train").prepare(0)
    assert s["mask"].shape == (32,)  # mask subsampled with the points
    batch = next(iter(dm.val_dataloader()))
    assert torch.equal(batch["label"], torch.arange(5))


@pytest.mark.parametrize(
    "variant, rel",
    [
        ("OBJ_BG", "main_split/training_objectdataset.h5"),
        ("OBJ_ONLY", "main_split_nobg/training_objectdataset.h5"),
        ("PB_T50_RS_nobg", "main_split_nobg/training_objectdataset_augmentedrot_scale75.h5"),
        ("PB_T25", "main_split/training_objectdataset_augmented25_norot.h5"),
    ],
)
def test_scanobjectnn_variants(tmp_path, variant, rel):
    write_scanobjectnn(tmp_path, rel, n=15)
    assert len(ScanObjectNN(root=str(tmp_path), variant=variant).items("train")) == 15


def test_scanobjectnn_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"main_split/test_objectdataset_augmentedrot_scale75.h5.*request access"):
        ScanObjectNN(root=str(tmp_path)).items("test")
    with pytest.raises(ValueError, match="unknown ScanObjectNN variant"):
        ScanObjectNN(variant="PB_T99")
    rel = "main_split/training_objectdataset.h5"
    write_scanobjectnn(tmp_path, rel, label=np.full(30, 15))
    with pytest.raises(ValueError, match=r"training_objectdataset.h5: field 'label' value 15.*\[0, 15\)"):
        ScanObjectNN(root=str(tmp_path), variant="OBJ_BG").items("train")
    write_scanobjectnn(tmp_path, rel, mask=np.zeros((30, 7)))
    with pytest.raises(ValueError, match=r"training_objectdataset.h5: field 'mask' has shape \(30, 7\)"):
        ScanObjectNN(root=str(tmp_path), variant="OBJ_BG").items("train")
