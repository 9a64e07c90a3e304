"""PointCloudFolder: both layouts, every format, class names from folders, a cache that never relabels."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules import PointCloudFolder
from i2p import io

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
CUBE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
FORMATS = (".ply", ".pcd", ".xyz", ".txt", ".npz", ".npy", ".off", ".obj", ".stl")


def write_sample(path, scale: float, k: int) -> None:
    """A cloud (or mesh) whose x extent tells which class folder it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stretch = np.float32([scale, 1, 1])
    if path.suffix in (".off", ".obj", ".stl"):
        io.write_mesh(path, CUBE_V * stretch, CUBE_F)
    else:
        pts = np.random.default_rng(k).random((64, 3)).astype(np.float32) * stretch
        pts[0, 0] = scale  # the extent exactly
        io.write_point_cloud(path, pts)


def write_folder(root, classes=("apple", "bowl", "cup"), splits=("train", "test"), class_first=False, n=2, first=0):
    for ci, c in enumerate(classes, start=first):
        for split in splits:
            for k in range(n):
                ext = FORMATS[(ci * 7 + k + len(split)) % len(FORMATS)]
                d = root / c / split if class_first else root / split / c
                write_sample(d / f"{c}_{k}{ext}", scale=1.0 + ci, k=k)


def extents(dm, split):
    return [float(dm.read_sample(it)["points"][:, 0].max()) for it in dm.items(split)]


def test_split_first_every_format_names_from_folders(tmp_path):
    root = tmp_path / "shapes"
    for k, ext in enumerate(FORMATS):  # every format in one class
        write_sample(root / "train" / "apple" / f"a{k}{ext}", 1.0, k)
    write_folder(root, classes=("bowl", "cup"), splits=("train", "val", "test"), first=1)
    (root / "train" / "cup" / "notes.md").write_text("not a cloud")  # other files are not samples
    dm = PointCloudFolder(root=str(root), num_points=32, batch_size=4, voxel_size=0.2)
    assert dm.class_names == ["apple", "bowl", "cup"] and dm.num_classes == 3 and dm.layout == "split_first"
    labels = [dm.sample_label(it) for it in dm.items("train")]
    assert labels == [0] * len(FORMATS) + [1, 1, 2, 2]
    np.testing.assert_allclose(extents(dm, "train"), [1.0 + lab for lab in labels], atol=1e-4)
    assert len(dm.items("val")) == len(dm.items("test")) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["label"].shape == (4,) and set(batch) >= {"x", "label", "index", "points"}
    assert str(root / "train" / "apple") in dm.describe_sample(dm.items("train")[0])


def test_class_first_modelnet_order_val_is_test(tmp_path):
    root = tmp_path / "mn"
    write_folder(root, class_first=True)
    dm = PointCloudFolder(root=str(root), mesh_points=100, num_points=None)
    assert dm.layout == "class_first" and dm.class_names == ["apple", "bowl", "cup"]
    assert dm.split_dirs == {"train": "train", "test": "test", "val": "test"}
    assert [dm.sample_label(it) for it in dm.items("val")] == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(extents(dm, "val"), [1, 1, 2, 2, 3, 3], atol=1e-4)


def test_reordered_classes_never_relabel_from_the_cache(tmp_path):
    root = tmp_path / "shapes"
    write_folder(root)
    first = PointCloudFolder(root=str(root))
    first.prepare_data()
    old_train = first.cache_path("train")
    assert old_train.is_file()
    np.testing.assert_allclose(extents(first, "train"), [1, 1, 2, 2, 3, 3], atol=1e-4)

    swapped = PointCloudFolder(root=str(root), classes=["cup", "bowl", "apple"])
    assert swapped.cache_path("train") != old_train  # the class list is part of the key
    labels = [swapped.sample_label(it) for it in swapped.items("train")]
    # each sample keeps its folder's class: a cup (extent 3) is label 0 now
    for label, extent in zip(labels, extents(swapped, "train")):
        assert swapped.class_names[label] == first.class_names[round(extent) - 1]

    # a cache that somehow holds another order is refused, not served
    stale = PointCloudFolder(root=str(root), classes=["bowl", "apple"])
    stale.cache_path("train").parent.mkdir(exist_ok=True)
    old_train.replace(stale.cache_path("train"))
    with pytest.raises(ValueError, match="cached with classes"):
        stale.arrays("train")


def test_cache_key_follows_files_and_settings(tmp_path):
    root = tmp_path / "shapes"
    write_folder(root)
    dm = PointCloudFolder(root=str(root))
    key = dm.cache_key("train")
    assert PointCloudFolder(root=str(root), mesh_points=99).cache_key("train") != key
    write_sample(root / "train" / "bowl" / "bowl_new.npz", 2.0, 9)  # a new file
    assert dm.cache_key("train") != key


def test_folder_errors_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        PointCloudFolder(root=str(tmp_path / "nothing"))
    (tmp_path / "flat" / "apple").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no train and val/test folders.*<split>/<class>"):
        PointCloudFolder(root=str(tmp_path / "flat"))
    root = tmp_path / "shapes"
    write_folder(root)
    with pytest.raises(ValueError, match=r"classes \['pear'\] have no folder"):
        PointCloudFolder(root=str(root), classes=["apple", "pear"])
    with pytest.raises(ValueError, match="cannot be read"):
        PointCloudFolder(root=str(root), extensions=[".las"])
