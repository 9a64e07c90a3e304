"""Validation media for W&B: point clouds coloured by truth and prediction, a confusion
matrix and a per-class accuracy table. Without a ``WandbLogger`` every hook returns at once.

The clouds come from rank 0's first ``validation_step`` outputs (docs/conventions.md). The
confusion matrix has one owner, the LightningModule (``pl_module.confusion["val"]``, summed over
ranks by its torchmetrics object once per epoch): this callback only draws it, after the module's
``on_validation_epoch_end`` has computed it.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger

__all__ = ["palette", "WandbMedia"]


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours, well separated (golden-ratio hues) for any class count."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.75) for i, h in enumerate(hues)]
    return (np.asarray(rgb).reshape(n, 3) * 255).round().astype(np.uint8)


class WandbMedia(Callback):
    """Every ``every_n_epochs``: ``num_clouds`` clouds (``<= max_points`` points each), the
    confusion matrix and per-class accuracy of the validation set, logged under ``media/``.
    """

    def __init__(self, num_clouds: int = 4, max_points: int = 2048, every_n_epochs: int = 1) -> None:
        self.num_clouds = num_clouds
        self.max_points = max_points
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._clouds: list[dict[str, np.ndarray]] = []

    @staticmethod
    def _wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def _active(self, trainer: Trainer) -> bool:
        every = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return every and not trainer.sanity_checking and bool(self._wandb_loggers(trainer))

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._clouds = []

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 0 or not trainer.is_global_zero or len(self._clouds) >= self.num_clouds:
            return
        if not self._active(trainer) or not isinstance(outputs, dict) or not isinstance(batch, dict):
            return
        label, preds = outputs.get("label"), outputs.get("preds")
        if preds is None or label is None or preds.shape != label.shape or "points" not in batch:
            return
        self._take_clouds(batch, label.reshape(-1), preds.reshape(-1), int(pl_module.num_classes))

    def _take_clouds(self, batch: dict, label: torch.Tensor, preds: torch.Tensor, num_classes: int) -> None:
        points = batch["points"].detach().float().cpu().numpy()
        offsets = batch.get("point_offsets")
        offsets = [0, len(points)] if offsets is None else offsets.cpu().tolist()
        per_point = label.numel() == len(points)  # segmentation: one label per input point
        colours = palette(num_classes)
        label, preds = label.cpu().numpy(), preds.cpu().numpy()
        for b in range(len(offsets) - 1):
            if len(self._clouds) >= self.num_clouds:
                break
            lo, hi = offsets[b], offsets[b + 1]
            keep = np.arange(lo, hi)
            if len(keep) > self.max_points:  # even stride: deterministic, covers the whole shape
                keep = keep[np.linspace(0, len(keep) - 1, self.max_points).astype(int)]
            xyz = points[keep]
            truth = label[keep] if per_point else np.full(len(keep), label[b])
            pred = preds[keep] if per_point else np.full(len(keep), preds[b])
            self._clouds.append(
                {
                    "truth": np.hstack([xyz, colours[truth]]).astype(np.float32),
                    "pred": np.hstack([xyz, colours[pred]]).astype(np.float32),
                    "caption": "" if per_point else f"truth {int(label[b])} / pred {int(preds[b])}",
                }
            )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        confusion = getattr(pl_module, "confusion", {}).get("val")
        if self._active(trainer) and trainer.is_global_zero and confusion is not None:
            payload = self._payload(confusion, getattr(pl_module, "class_names", None))
            for logger in self._wandb_loggers(trainer):
                logger.log_metrics(payload, step=trainer.global_step)
        self._clouds = []

    def _payload(self, confusion: torch.Tensor, class_names: list[str] | None) -> dict[str, Any]:
        import wandb

        c = confusion.shape[0]
        names = list(class_names) if class_names and len(class_names) == c else [str(i) for i in range(c)]
        payload: dict[str, Any] = {}
        for i, cloud in enumerate(self._clouds):
            payload[f"media/cloud{i}/truth"] = wandb.Object3D(cloud["truth"], caption=cloud["caption"])
            payload[f"media/cloud{i}/pred"] = wandb.Object3D(cloud["pred"], caption=cloud["caption"])
        rows = [[names[i], names[j], int(confusion[i, j])] for i in range(c) for j in range(c)]
        payload["media/confusion_matrix"] = wandb.plot_table(
            vega_spec_name="wandb/confusion_matrix/v1",
            data_table=wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows),
            fields={"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            string_fields={"title": "Validation confusion matrix"},
        )
        support = confusion.sum(1)
        acc = [float(confusion[i, i] / support[i]) if support[i] else None for i in range(c)]
        payload["media/per_class_accuracy"] = wandb.Table(
            columns=["class", "accuracy", "support"], data=[[names[i], acc[i], int(support[i])] for i in range(c)]
        )
        return payload
