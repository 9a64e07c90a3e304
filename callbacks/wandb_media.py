"""Validation and test media for W&B: point clouds coloured by truth and by prediction (captioned
with class names), the confusion matrix, and a per-class table (accuracy for classification;
IoU, accuracy and support for segmentation). Without a ``WandbLogger`` every hook returns at once.

The clouds come from rank 0's first ``validation_step`` / ``test_step`` outputs
(docs/conventions.md); with per-point labels (segmentation) each point is coloured by its own
class, points labelled ``ignore_index`` (or any id outside the class table) grey. The confusion
matrix has one owner, the LightningModule (``pl_module.confusion[split]``, summed over ranks by
its torchmetrics object once per epoch): this callback only draws it, after the module's
``on_<split>_epoch_end``. Validation media go to ``media/...``, test media to ``media/test/...``.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger

from models.metrics import segmentation_scores

__all__ = ["palette", "IGNORED_COLOUR", "WandbMedia"]

IGNORED_COLOUR = np.array([128, 128, 128], np.uint8)  # points without a valid label


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours, well separated (golden-ratio hues) for any class count."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.75) for i, h in enumerate(hues)]
    return (np.asarray(rgb).reshape(n, 3) * 255).round().astype(np.uint8)


def _names(class_names: list[str] | None, n: int) -> list[str]:
    return list(class_names) if class_names and len(class_names) == n else [str(i) for i in range(n)]


class WandbMedia(Callback):
    """Every ``every_n_epochs`` (and once per test): ``num_clouds`` clouds (``<= max_points`` points
    each), the confusion matrix and a per-class table, logged under ``media/`` (``media/test/``).
    """

    def __init__(self, num_clouds: int = 4, max_points: int = 2048, every_n_epochs: int = 1) -> None:
        self.num_clouds = num_clouds
        self.max_points = max_points
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._clouds: list[dict[str, Any]] = []

    @staticmethod
    def _wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def _active(self, trainer: Trainer) -> bool:
        every = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return every and not trainer.sanity_checking and bool(self._wandb_loggers(trainer))

    # ------------------------------------------------------------------ clouds
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._clouds = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._clouds = []

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._active(trainer):
            self._collect(trainer, pl_module, outputs, batch, dataloader_idx)

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._wandb_loggers(trainer):
            self._collect(trainer, pl_module, outputs, batch, dataloader_idx)

    def _collect(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                 dataloader_idx: int) -> None:
        if dataloader_idx != 0 or not trainer.is_global_zero or len(self._clouds) >= self.num_clouds:
            return
        if not isinstance(outputs, dict) or not isinstance(batch, dict):
            return
        label, preds = outputs.get("label"), outputs.get("preds")
        if preds is None or label is None or preds.shape != label.shape or "points" not in batch:
            return
        n = int(pl_module.num_classes)
        self._take_clouds(batch, label.reshape(-1), preds.reshape(-1), n,
                          _names(getattr(pl_module, "class_names", None), n))

    def _take_clouds(self, batch: dict, label: torch.Tensor, preds: torch.Tensor, num_classes: int,
                     names: list[str] | None = None) -> None:
        names = names or [str(i) for i in range(num_classes)]
        points = batch["points"].detach().float().cpu().numpy()
        offsets = batch.get("point_offsets")
        offsets = [0, len(points)] if offsets is None else offsets.cpu().tolist()
        index = batch.get("index")
        index = list(range(len(offsets) - 1)) if index is None else index.cpu().tolist()
        per_point = label.numel() == len(points)  # segmentation: one label per input point
        colours = np.concatenate([palette(num_classes), IGNORED_COLOUR[None]])
        label, preds = label.cpu().numpy(), preds.cpu().numpy()

        def colour(ids: np.ndarray) -> np.ndarray:
            return colours[np.where((ids >= 0) & (ids < num_classes), ids, num_classes)]

        for b in range(len(offsets) - 1):
            if len(self._clouds) >= self.num_clouds:
                break
            lo, hi = offsets[b], offsets[b + 1]
            keep = np.arange(lo, hi)
            if len(keep) > self.max_points:  # even stride: deterministic, covers the whole cloud
                keep = keep[np.linspace(0, len(keep) - 1, self.max_points).astype(int)]
            truth = label[keep] if per_point else np.full(len(keep), label[b])
            pred = preds[keep] if per_point else np.full(len(keep), preds[b])
            if per_point:
                seg_t, seg_p = label[lo:hi], preds[lo:hi]
                valid = (seg_t >= 0) & (seg_t < num_classes)
                acc = float((seg_t[valid] == seg_p[valid]).mean()) if valid.any() else float("nan")
                present = [names[c] for c in np.unique(seg_t[valid])]
                caption = f"sample {index[b]}: point accuracy {acc:.3f}; classes " + ", ".join(present)
            else:
                caption = f"sample {index[b]}: truth {names[int(label[b])]} / pred {names[int(preds[b])]}"
            self._clouds.append({
                "truth": np.hstack([points[keep], colour(truth)]).astype(np.float32),
                "pred": np.hstack([points[keep], colour(pred)]).astype(np.float32),
                "caption": caption,
            })

    # ------------------------------------------------------------------ logging
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active(trainer):
            self._log(trainer, pl_module, "val", "media")
        self._clouds = []

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._wandb_loggers(trainer):
            self._log(trainer, pl_module, "test", "media/test")
        self._clouds = []

    def _log(self, trainer: Trainer, pl_module: LightningModule, split: str, prefix: str) -> None:
        confusion = getattr(pl_module, "confusion", {}).get(split)
        if not trainer.is_global_zero or confusion is None:
            return
        seg = getattr(pl_module, "task", "classification") == "segmentation"
        payload = self._payload(confusion, getattr(pl_module, "class_names", None), split, prefix, seg)
        for logger in self._wandb_loggers(trainer):
            logger.log_metrics(payload, step=trainer.global_step)

    def _payload(self, confusion: torch.Tensor, class_names: list[str] | None, split: str = "val",
                 prefix: str = "media", segmentation: bool = False) -> dict[str, Any]:
        import wandb

        c = confusion.shape[0]
        names = _names(class_names, c)
        title = {"val": "Validation", "test": "Test"}.get(split, split)
        payload: dict[str, Any] = {}
        for i, cloud in enumerate(self._clouds):
            payload[f"{prefix}/cloud{i}/truth"] = wandb.Object3D(cloud["truth"], caption=f"truth · {cloud['caption']}")
            payload[f"{prefix}/cloud{i}/pred"] = wandb.Object3D(cloud["pred"], caption=f"pred · {cloud['caption']}")
        rows = [[names[i], names[j], int(confusion[i, j])] for i in range(c) for j in range(c)]
        payload[f"{prefix}/confusion_matrix"] = wandb.plot_table(
            vega_spec_name="wandb/confusion_matrix/v1",
            data_table=wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows),
            fields={"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            string_fields={"title": f"{title} confusion matrix"},
        )
        support = confusion.sum(1)
        acc = [float(confusion[i, i] / support[i]) if support[i] else None for i in range(c)]
        if segmentation:  # IoU of a class absent from truth and prediction: none (left out of mIoU)
            iou = [None if v != v else v for v in segmentation_scores(confusion)["iou"].tolist()]
            payload[f"{prefix}/per_class_iou"] = wandb.Table(
                columns=["class", "iou", "accuracy", "support"],
                data=[[names[i], iou[i], acc[i], int(support[i])] for i in range(c)])
        else:
            payload[f"{prefix}/per_class_accuracy"] = wandb.Table(
                columns=["class", "accuracy", "support"], data=[[names[i], acc[i], int(support[i])] for i in range(c)])
        return payload
