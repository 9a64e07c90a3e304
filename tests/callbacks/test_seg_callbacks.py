"""WandbMedia and NeuralCollapse on a segmenter: clouds coloured per point (ignored points grey,
captions with class names), the per-class IoU table and both confusion matrices; collapse statistics
on a bounded, index-seeded subset of points.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from callbacks import NeuralCollapse, WandbMedia
from callbacks.wandb_media import IGNORED_COLOUR, palette
from tests.helpers.segmentation import tiny_rooms, tiny_segmenter


class FakeWandb:
    def __init__(self):
        self.payloads = []

    def log_metrics(self, metrics, step=None):
        self.payloads.append(dict(metrics))


class MediaProbe(WandbMedia):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.fake = FakeWandb()

    def _wandb_loggers(self, trainer):
        return [self.fake]


def test_clouds_colour_each_point_and_grey_the_ignored():
    media = WandbMedia(num_clouds=2, max_points=100)
    points = torch.rand(7, 3)
    batch = {"points": points, "point_offsets": torch.tensor([0, 4, 7]), "index": torch.tensor([5, 9])}
    label = torch.tensor([0, 1, -100, 1, 2, 2, 0])
    preds = torch.tensor([0, 0, 2, 1, 2, 1, 0])
    media._take_clouds(batch, label, preds, 3, ["floor", "wall", "chair"])
    first, second = media._clouds
    colours = palette(3)
    np.testing.assert_array_equal(first["truth"][:, 3:], np.stack([colours[0], colours[1], IGNORED_COLOUR,
                                                                   colours[1]]))
    np.testing.assert_array_equal(first["pred"][:, 3:], np.stack([colours[0], colours[0], colours[2], colours[1]]))
    assert first["caption"] == "sample 5: point accuracy 0.667; classes floor, wall"
    assert second["caption"].startswith("sample 9:") and "chair" in second["caption"]
    media._clouds = []
    media._take_clouds({"points": points, "point_offsets": torch.tensor([0, 4, 7])}, torch.tensor([2, 0]),
                       torch.tensor([2, 1]), 3, ["floor", "wall", "chair"])  # classification: one label a sample
    assert media._clouds[1]["caption"] == "sample 1: truth floor / pred wall"


@pytest.mark.slow
def test_segmenter_fit_and_test_log_media_and_bounded_collapse_statistics(tmp_path):
    pl.seed_everything(0)
    dm = tiny_rooms(num_train=4, num_val=3, num_test=2)
    model = tiny_segmenter(dm)
    media = MediaProbe(num_clouds=2, max_points=500)
    nc = NeuralCollapse(max_points_per_sample=30, plot=False)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[media, nc], default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    m = trainer.callback_metrics
    assert float(m["nc/val/num_samples"]) == 3 * 30 and float(m["nc/train/num_samples"]) == 4 * 30
    val = media.fake.payloads[-1]
    assert {"media/cloud0/truth", "media/cloud1/pred", "media/confusion_matrix", "media/per_class_iou"} <= set(val)
    table = val["media/per_class_iou"]
    assert [row[0] for row in table.data] == dm.class_names
    assert sum(row[3] for row in table.data) == int(model.confusion["val"].sum())
    iou = model.scores["val"]["iou"].tolist()
    assert [row[1] for row in table.data] == [None if v != v else v for v in iou]
    trainer.test(model, dm, verbose=False)
    test = media.fake.payloads[-1]
    assert {"media/test/confusion_matrix", "media/test/per_class_iou", "media/test/cloud0/truth"} <= set(test)
    assert sum(row[3] for row in test["media/test/per_class_iou"].data) == int(model.confusion["test"].sum())

    # the rows: the same points of a sample whatever batch carries it
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    out = model.segment(batch)
    a = nc._point_rows(model, batch, out["features"], out["label"], out["preds"])
    b = nc._point_rows(model, batch, out["features"], out["label"], out["preds"])
    assert a[0].shape == (2 * 30, out["features"].shape[1]) and torch.equal(a[0], b[0])
