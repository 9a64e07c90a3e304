"""PointSegmenter: the step contract (voxels in training, every point in evaluation), point-level mIoU
through the inverse map against numpy, absent classes and ignore_index, the io regime, part
segmentation, and a short fit that beats the majority class.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from models.metrics import PartIoU, segmentation_scores, shape_part_iou
from tests.helpers.segmentation import tiny_rooms, tiny_segmenter


def _numpy_scores(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore: int = -100) -> dict:
    keep = label != ignore
    pred, label = pred[keep], label[keep]
    ious, accs = [], []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (label == c))
        union = np.sum((pred == c) | (label == c))
        if union:
            ious.append(tp / union)
        if np.sum(label == c):
            accs.append(tp / np.sum(label == c))
    return {"miou": float(np.mean(ious)), "oacc": float(np.mean(pred == label)), "macc": float(np.mean(accs))}


def test_scores_leave_absent_classes_out_and_never_count_ignored_points():
    label = np.array([0, 0, 1, 1, 1, -100, -100, 3])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 3])  # class 2 only predicted on ignored points: absent
    from torchmetrics.classification import MulticlassConfusionMatrix

    cm = MulticlassConfusionMatrix(num_classes=5, ignore_index=-100)(torch.from_numpy(pred), torch.from_numpy(label))
    scores = segmentation_scores(cm)
    assert math.isnan(scores["iou"][2]) and math.isnan(scores["iou"][4])  # absent from truth and prediction
    assert scores["iou"][3] == 1.0 and scores["iou"][0] == pytest.approx(1 / 3)
    ref = _numpy_scores(pred, label, 5)
    for key in ("miou", "oacc", "macc"):
        assert scores[key] == pytest.approx(ref[key]), key
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 4 + 1.0) / 3)  # over the 3 present classes, not 5
    assert math.isnan(segmentation_scores(torch.zeros(3, 3))["miou"])


@pytest.mark.slow
def test_step_contract_voxels_in_training_points_in_evaluation():
    dm = tiny_rooms()
    model = tiny_segmenter(dm)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = model.training_step(batch, 0)
    assert set(out) == {"loss", "features", "logits", "preds", "label", "index"} and out["loss"].requires_grad
    assert out["logits"].shape == (len(batch["x"]), dm.num_classes) and out["features"].shape[0] == len(batch["x"])
    val = model.validation_step(next(iter(dm.val_dataloader())), 0)
    vbatch = next(iter(dm.val_dataloader()))
    assert val["preds"].shape == vbatch["label"].shape == (len(vbatch["points"]),)  # every original point
    assert not val["loss"].requires_grad and not val["features"].requires_grad
    assert model.forward(vbatch).shape == (len(vbatch["points"]), dm.num_classes)
    assert model.head_weight.shape == (dm.num_classes, out["features"].shape[1])


@pytest.mark.slow
def test_point_level_miou_through_the_inverse_map_equals_numpy():
    dm = tiny_rooms(num_val=5)
    model = tiny_segmenter(dm, devoxelize="nearest").eval()
    dm.setup("validate")
    preds, labels = [], []
    with torch.no_grad():
        for i, batch in enumerate(dm.val_dataloader()):
            batch["label"][::7] = -100  # some ignored points
            step = model.validation_step(batch, i)
            voxel_preds = model.backbone(batch["x"]).argmax(1)  # the voxels' predictions ...
            torch.testing.assert_close(step["preds"], voxel_preds[batch["inverse"]])  # ... at every point
            preds.append(step["preds"].numpy())
            labels.append(batch["label"].numpy())
    model.on_validation_epoch_end()
    ref = _numpy_scores(np.concatenate(preds), np.concatenate(labels), dm.num_classes)
    scores = model.scores["val"]
    for key in ("miou", "oacc", "macc"):
        assert scores[key] == pytest.approx(ref[key], abs=1e-9), key
    assert int(model.confusion["val"].sum()) == int(sum((lab != -100).sum() for lab in labels))


@pytest.mark.slow
def test_io_trains_only_stem_downsample_decoder_and_head():
    dm = tiny_rooms()
    model = tiny_segmenter(dm, regime="io")
    model.train()
    encoder_bn = [m for n, m in model.backbone.named_modules() if n.startswith("layer") and
                  isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert encoder_bn and not any(m.training for m in encoder_bn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dm.setup("fit")
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    loss = model.training_step(next(iter(dm.train_dataloader())), 0)["loss"]
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"stem", "down", "up1", "up2", "up3", "up4", "head"}
    assert "regime io" in str(model.regime_summary)


@pytest.mark.slow
def test_part_iou_restricts_predictions_to_the_category():
    parts = [[0, 1], [2, 3, 4]]
    assert shape_part_iou(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), [0, 1]) == pytest.approx((0.5 + 0.5) / 2)
    # part 1 absent from truth and prediction: left out (skip) or scored 1 (PointNet's protocol)
    assert shape_part_iou(torch.tensor([0, 0]), torch.tensor([0, 0]), [0, 1]) == 1.0
    assert shape_part_iou(torch.tensor([0, 2]), torch.tensor([0, 0]), [0, 1], "one") == pytest.approx((0.5 + 1) / 2)
    metric = PartIoU(parts)
    metric.update(torch.tensor([0, 1, 2, 2, 4]), torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 1]),
                  torch.tensor([0, 2, 5]))
    metric.update(torch.tensor([3]), torch.tensor([2]), torch.tensor([1]), torch.tensor([0, 1]))
    instance, category, per_cat = metric.compute()
    shape_b = (0.5 + 0 + 1) / 3  # parts 2, 3, 4 of the second shape
    assert per_cat.tolist() == pytest.approx([1.0, (shape_b + 0.0) / 2])
    assert float(instance) == pytest.approx((1.0 + shape_b + 0.0) / 3)
    assert float(category) == pytest.approx((1.0 + (shape_b + 0.0) / 2) / 2)

    from models import PointSegmenter

    model = PointSegmenter(num_classes=5, in_channels=3, num_categories=2, category_parts=parts, preset="light",
                           decoder_channels=[8, 8, 8, 8], regime="all", devoxelize="nearest")
    logits = torch.tensor([[0.0, 0.0, 9.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 9.0]])
    assert model.predict_labels(logits, torch.tensor([0, 1])).tolist() == [0, 4]  # part 2 is not category 0's
    with pytest.raises(ValueError, match="category_parts"):
        PointSegmenter(num_classes=5, num_categories=3, category_parts=parts, preset="light")


@pytest.mark.slow
def test_short_fit_beats_the_majority_class_clearly():
    from i2p.cli.demo_seg import majority_baseline
    from tests.helpers.classifier import tiny_pretrained_2d

    pl.seed_everything(0)
    dm = tiny_rooms(num_train=12, num_test=4, batch_size=3)
    model = tiny_segmenter(dm, regime="ioms", pretrained=str(tiny_pretrained_2d()), lr=0.1)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(model, dm)
    result = trainer.test(model, dm, verbose=False)[0]
    baseline = majority_baseline(dm, "test")
    assert baseline["class"] == dm.class_names.index("wall")
    assert result["test/miou"] > 2 * baseline["miou"] and result["test/oacc"] > baseline["oacc"] + 0.1
