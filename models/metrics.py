"""Segmentation scores from a confusion matrix, and the ShapeNetPart per-shape IoU metric.

Pure torch (+ torchmetrics' ``Metric`` for rank-merged state): no Lightning. Conventions
(docs/segmentation.md):

- a class absent from both truth and prediction has no IoU (NaN) and is left out of the mean;
  the official Image2Point callback scored it 1, which inflates mIoU on scenes missing classes;
- ``ignore_index`` points never reach the confusion matrix (the caller drops them);
- mean class accuracy averages the classes present in the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["segmentation_scores", "shape_part_iou", "PartIoU", "PART_ABSENT"]

#: what a part of the shape's category absent from both truth and prediction scores:
#: ``skip`` (left out of the shape's mean, this project's default) or ``one`` (PointNet's protocol)
PART_ABSENT = ("skip", "one")


def segmentation_scores(confusion: Tensor) -> dict[str, Any]:
    """Per-class IoU, mIoU, overall and mean class accuracy of a ``[C, C]`` confusion (rows = truth).

    IoU_c = TP / (TP + FP + FN); a class with TP + FP + FN = 0 (absent from truth and prediction)
    gets NaN and does not count in mIoU. Mean class accuracy averages TP / support over the classes
    with support. An empty matrix gives NaN everywhere.
    """
    cm = confusion.detach().to(torch.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, got {tuple(cm.shape)}")
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    union = support + predicted - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    acc = torch.where(support > 0, tp / support.clamp_min(1), nan)
    total = cm.sum()
    return {
        "iou": iou,  # [C] float64, NaN where undefined
        "miou": float(iou.nanmean()) if bool((union > 0).any()) else float("nan"),
        "oacc": float(tp.sum() / total) if total > 0 else float("nan"),
        "macc": float(acc.nanmean()) if bool((support > 0).any()) else float("nan"),
    }


def shape_part_iou(pred: Tensor, label: Tensor, parts: Sequence[int], absent: str = "skip") -> float:
    """Mean IoU over the ``parts`` of one shape's category (PointNet's per-shape score).

    ``absent="skip"`` leaves a part missing from both truth and prediction out of the mean;
    ``"one"`` scores it 1 (the PointNet evaluation, for numbers comparable with the literature).
    Returns NaN when no part is scored (every part skipped).
    """
    if absent not in PART_ABSENT:
        raise ValueError(f"absent must be one of {PART_ABSENT}, got {absent!r}")
    scores = []
    for part in parts:
        p, t = pred == part, label == part
        union = int((p | t).sum())
        if union == 0:
            if absent == "one":
                scores.append(1.0)
            continue
        scores.append(int((p & t).sum()) / union)
    return sum(scores) / len(scores) if scores else float("nan")


class PartIoU(Metric):
    """Instance-average and category-average part mIoU (ShapeNetPart), merged across ranks.

    ``update(pred, label, category, offsets)``: per-point predictions and labels of a batch, the
    category of each shape ``[B]`` and ``offsets [B + 1]`` (shape ``b`` owns points
    ``offsets[b]:offsets[b+1]``). Points labelled ``ignore_index`` are dropped. ``compute()`` returns
    ``(instance_miou, category_miou, per_category [K])``: the mean of per-shape mIoU over shapes, and
    over the categories that have shapes (NaN for a category without any).
    """

    full_state_update = False

    def __init__(self, category_parts: Sequence[Sequence[int]], absent: str = "skip", ignore_index: int = -100,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if absent not in PART_ABSENT:
            raise ValueError(f"absent must be one of {PART_ABSENT}, got {absent!r}")
        self.category_parts = [list(p) for p in category_parts]
        self.absent, self.ignore_index = absent, ignore_index
        k = len(self.category_parts)
        self.add_state("iou_sum", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("shapes", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, label: Tensor, category: Tensor, offsets: Tensor) -> None:
        pred, label = pred.reshape(-1).cpu(), label.reshape(-1).cpu()
        offsets, category = offsets.reshape(-1).tolist(), category.reshape(-1).tolist()
        if len(offsets) != len(category) + 1 or offsets[-1] != len(label):
            raise ValueError(f"offsets {len(offsets)} / {offsets[-1]} do not match {len(category)} shapes and "
                             f"{len(label)} points")
        for b, cat in enumerate(category):
            lo, hi = offsets[b], offsets[b + 1]
            p, t = pred[lo:hi], label[lo:hi]
            keep = t != self.ignore_index
            score = shape_part_iou(p[keep], t[keep], self.category_parts[cat], self.absent)
            if score == score:  # not NaN
                self.iou_sum[cat] += score
                self.shapes[cat] += 1

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        per_category = torch.where(self.shapes > 0, self.iou_sum / self.shapes.clamp_min(1),
                                   torch.full_like(self.shapes, float("nan")))
        instance = self.iou_sum.sum() / self.shapes.sum().clamp_min(1)
        if self.shapes.sum() == 0:
            instance = torch.tensor(float("nan"), dtype=torch.float64)
        return instance, per_category.nanmean(), per_category
