"""Test-time voting: N = 1 is the plain test; N > 1 averages the logits of the batch and N - 1 transformed views."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from datamodules.transforms import RandomScale
from datamodules.voting import vote_views
from i2p.sparse import sparse_quantize
from models import PointClassifier
from tests.helpers.classifier import tiny_data


def _model(votes: int = 1) -> PointClassifier:
    torch.manual_seed(0)
    return PointClassifier(num_classes=4, regime="all", test_votes=votes).eval()


def _test_batch(dm):
    dm.setup("test")
    return next(iter(dm.test_dataloader()))


@pytest.fixture(scope="module")
def dm():
    return tiny_data()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def batch(dm):
    return _test_batch(dm)


def test_one_vote_is_the_plain_forward(dm, model, batch):
    with torch.no_grad():
        plain = model(batch["x"])
    assert torch.equal(model.vote_logits(batch, 1, datamodule=dm), plain)
    assert vote_views(batch, 1, dm.vote_transform, dm.voxel_size, dm.features) == []


def test_votes_average_the_logits_of_transformed_views(dm, model, batch):
    views = dm.vote_views(batch, 3)
    assert len(views) == 2
    with torch.no_grad():
        expected = (model(batch["x"]) + model(views[0]) + model(views[1])) / 3
        voted = model.vote_logits(batch, 3, datamodule=dm)
    torch.testing.assert_close(voted, expected)
    assert not torch.allclose(voted, model(batch["x"]))
    # each view is the sample's own points scaled (seeded by sample index and view), re-voxelised
    b, i = 1, int(batch["index"][1])
    pts = batch["points"][batch["point_offsets"][b]:batch["point_offsets"][b + 1]].numpy()
    scaled = dm.vote_transform({"points": pts, "label": 0}, np.random.default_rng([dm.seed, i, 2, 0x707E]))["points"]
    assert not np.allclose(scaled, pts)
    coords, _, _ = sparse_quantize(torch.from_numpy(scaled), dm.voxel_size)
    x = views[1]
    assert torch.equal(x.coords[x.coords[:, 0] == b][:, 1:], coords)


def test_views_do_not_depend_on_the_batch_they_are_in(dm, batch):
    full = batch
    single = next(iter(torch.utils.data.DataLoader(dm.dataset("test"), batch_size=1, sampler=[3],
                                                   collate_fn=dm.collate)))
    a, b = dm.vote_views(full, 2)[0], dm.vote_views(single, 2)[0]
    assert torch.equal(a.coords[a.coords[:, 0] == 3][:, 1:], b.coords[:, 1:])


def test_voting_needs_point_only_features(model, batch):
    with pytest.raises(ValueError, match="colours or normals"):
        vote_views(batch, 2, RandomScale(p=1.0), 0.25, "xyz+rgb")
    with pytest.raises(ValueError, match="test_votes"):
        PointClassifier(num_classes=4, test_votes=0)
    with pytest.raises(RuntimeError, match="vote_views"):
        model.vote_logits(batch, 2)  # no trainer, no DataModule given


@pytest.mark.slow
def test_trainer_test_reports_plain_and_voted_accuracy(dm):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    plain = trainer.test(_model(1), datamodule=dm, verbose=False)[0]
    voted = trainer.test(_model(4), datamodule=dm, verbose=False)[0]
    assert "test/acc_vote" not in plain and {"test/acc_vote", "test/macc_vote"} <= set(voted)
    assert voted["test/acc"] == plain["test/acc"] and voted["test/loss"] == plain["test/loss"]  # N = 1 part unchanged
    # the voted accuracy is that of the averaged logits
    model = _model(4)
    correct = total = 0
    for batch in dm.test_dataloader():
        logits = model.vote_logits(batch, 4, datamodule=dm)
        correct += int((logits.argmax(1) == batch["label"]).sum())
        total += len(batch["label"])
    assert voted["test/acc_vote"] == pytest.approx(correct / total)
