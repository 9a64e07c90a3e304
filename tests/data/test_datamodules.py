"""VoxelDataModule: collation into the conventions' batch, subsets, samplers, seeding, errors."""

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from datamodules import ArrayDataModule, VoxelDataModule
from i2p.sparse import SparseTensor


class Blobs(ArrayDataModule):
    """Tiny in-memory data set: class c = a blob around a class-specific centre."""

    class_names = ["a", "b", "c"]

    def __init__(self, n=30, points=100, bad=None, **kw):
        super().__init__(**kw)
        self.n, self.points, self.bad = n, points, bad

    def load_split(self, split):
        rng = np.random.default_rng({"train": 0, "val": 1, "test": 2}[split])
        label = np.arange(self.n) % 3
        pts = rng.normal(size=(self.n, self.points, 3)).astype(np.float32) * 0.3 + label[:, None, None]
        return {"points": pts, "label": label, "source": f"blobs/{split}.h5"}


def dm(**kw):
    kw.setdefault("batch_size", 4)
    return Blobs(**kw)


def test_batch_matches_conventions():
    d = dm(num_points=64, voxel_size=0.1, augmentation="none")
    batch = next(iter(d.val_dataloader()))
    assert set(batch) == {"x", "label", "index", "inverse", "point_offsets", "points"}
    x = batch["x"]
    assert isinstance(x, SparseTensor) and x.coords.dtype == torch.int32 and x.coords.shape[1] == 4
    assert batch["label"].dtype == torch.long and batch["label"].shape == (4,)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    P = batch["points"].shape[0]
    assert P == 4 * 64 and batch["inverse"].shape == (P,) and batch["point_offsets"].tolist() == [0, 64, 128, 192, 256]
    # every point lands in the voxel row of its own sample holding floor(p / voxel)
    rows = x.coords[batch["inverse"]]
    sample_of_point = torch.repeat_interleave(torch.arange(4), torch.diff(batch["point_offsets"]))
    assert torch.equal(rows[:, 0].long(), sample_of_point)
    assert torch.equal(rows[:, 1:], torch.floor(batch["points"] / 0.1).int())
    # features: xyz of a representative point inside each voxel
    assert torch.equal(torch.floor(x.feats / 0.1).int(), x.coords[:, 1:])
    # every voxel is hit by some point
    assert torch.equal(torch.unique(batch["inverse"]), torch.arange(len(x.coords)))


def test_points_normalised_and_subsampled():
    d = dm(num_points=50, augmentation="none")
    s = d.dataset("val")[0]
    assert s["points"].shape == (50, 3)
    assert abs(float(s["points"].norm(dim=1).max()) - 1.0) < 1e-5
    assert torch.allclose(s["points"].mean(0), torch.zeros(3), atol=1e-5)
    full = dm(num_points=None).dataset("val")[0]
    assert full["points"].shape == (100, 3)


def test_features_variants_and_in_channels():
    assert dm(features="ones").in_channels == 1
    s = dm(features="xyz+ones").dataset("val")[0]
    assert s["feats"].shape[1] == 4 and torch.all(s["feats"][:, 3] == 1)
    with pytest.raises(ValueError, match="need field 'colors'"):
        dm(features="xyz+rgb").dataset("val")[0]
    with pytest.raises(ValueError, match="unknown part"):
        dm(features="xyz+foo")


def test_num_classes_attribute_right_after_init():
    d = dm()
    assert d.num_classes == 3 and d.class_names == ["a", "b", "c"]
    assert d._arrays == {}


def test_few_shot_k_per_class_seeded_subset():
    base = dm(n=60).items("train")
    a = dm(n=60, few_shot=2, few_shot_seed=1).items("train")
    b = dm(n=60, few_shot=2, few_shot_seed=1).items("train")
    c = dm(n=60, few_shot=2, few_shot_seed=2).items("train")
    assert a == b and a != c
    assert set(a) <= set(base)
    labels = [i % 3 for _, i in a]
    assert np.bincount(labels).tolist() == [2, 2, 2]
    # val/test untouched
    assert len(dm(n=60, few_shot=2).items("test")) == 60
    with pytest.raises(ValueError, match="exclusive"):
        dm(few_shot=1, train_fraction=0.5)


def test_train_fraction_stratified_and_not():
    a = dm(n=60, train_fraction=0.5, seed=3).items("train")
    assert np.bincount([i % 3 for _, i in a]).tolist() == [10, 10, 10]
    assert a == dm(n=60, train_fraction=0.5, seed=3).items("train")
    assert a != dm(n=60, train_fraction=0.5, seed=4).items("train")
    u = dm(n=60, train_fraction=0.25, stratified=False).items("train")
    assert len(u) == 15
    with pytest.raises(ValueError, match="train_fraction"):
        dm(train_fraction=1.5).items("train")


@pytest.mark.parametrize("loader", ["val_dataloader", "test_dataloader", "train_eval_dataloader"])
def test_unpadded_eval_sampler_each_sample_once_across_ranks(loader, monkeypatch):
    seen = []
    for rank in range(2):
        d = dm(n=31, batch_size=4)  # 31 samples: a padding sampler would repeat one
        monkeypatch.setattr(d, "_distributed", lambda r=rank: {"num_replicas": 2, "rank": r})
        dl = getattr(d, loader)()
        assert isinstance(dl.sampler, DistributedSampler)  # so Lightning keeps it
        seen += [i for b in dl for i in b["index"].tolist()]
    assert sorted(seen) == list(range(31))


def test_train_eval_loader_in_order_deterministic():
    d = dm(n=10, augmentation="paper")
    one = [b["points"] for b in d.train_eval_dataloader()]
    two = [b["points"] for b in d.train_eval_dataloader()]
    assert all(torch.equal(p, q) for p, q in zip(one, two))
    assert torch.cat([b["index"] for b in d.train_eval_dataloader()]).tolist() == list(range(10))


def first_train_batch(**kw):
    return next(iter(dm(n=12, **kw).train_dataloader()))


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_reproducible_per_seed(workers):
    a = first_train_batch(seed=5, num_workers=workers)
    b = first_train_batch(seed=5, num_workers=workers)
    c = first_train_batch(seed=6, num_workers=workers)
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["points"], b["points"])
    assert not (torch.equal(a["index"], c["index"]) and torch.equal(a["points"], c["points"]))


def test_last_batch_of_one_dropped_for_batchnorm():
    assert len(dm(n=9, batch_size=4).train_dataloader()) == 2
    assert len(dm(n=10, batch_size=4).train_dataloader()) == 3


def test_errors_name_the_source():
    class Broken(Blobs):
        def load_split(self, split):
            out = super().load_split(split)
            out["points"][3, 5, 1] = np.nan
            return out

    with pytest.raises(ValueError, match=r"blobs/train.h5.*'points'.*NaN.*sample 3"):
        Broken().items("train")

    class BadLabel(Blobs):
        def load_split(self, split):
            out = super().load_split(split)
            out["label"] = out["label"] + 1
            return out

    with pytest.raises(ValueError, match=r"blobs/val.h5.*'label'.*value 3.*\[0, 3\)"):
        BadLabel().items("val")


def test_generic_reader_errors_name_item():
    class Files(VoxelDataModule):
        class_names = ["x", "y"]

        def list_samples(self, split):
            return ["ok.txt", "empty.txt", "nan.txt", "label.txt"]

        def read_sample(self, item):
            pts = np.zeros((5, 3), np.float32) + np.arange(5)[:, None]
            if item == "empty.txt":
                pts = pts[:0]
            if item == "nan.txt":
                pts[2, 0] = np.inf
            return {"points": pts, "label": 7 if item == "label.txt" else 1}

        def describe_sample(self, item):
            return f"/data/{item}"

    ds = Files(augmentation="none").dataset("val")
    assert ds[0]["label"].item() == 1
    with pytest.raises(ValueError, match="/data/empty.txt.*empty"):
        ds[1]
    with pytest.raises(ValueError, match="/data/nan.txt.*NaN/Inf"):
        ds[2]
    with pytest.raises(ValueError, match=r"/data/label.txt.*'label'.*\[0, 2\)"):
        ds[3]


def test_dataset_pickles_for_spawned_workers():
    import pickle

    d = dm(n=6, augmentation="none")
    d.trainer = object()  # a trainer is attached during fit; it must not travel to workers
    ds = d.dataset("val")
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[2]["points"], ds[2]["points"])
    assert d.trainer is not None  # the original is untouched
