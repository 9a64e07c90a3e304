"""Validation media for W&B: point clouds coloured by truth and prediction, a confusion
matrix and a per-class accuracy table. Without a ``WandbLogger`` every hook returns at once.

The confusion counts are summed over ranks (``strategy.reduce``), so the matrix covers the
whole validation set under DDP; the clouds come from rank 0's first batches.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours, well separated (golden-ratio hues) for any class count."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.75) for i, h in enumerate(hues)]
    return (np.asarray(rgb).reshape(n, 3) * 255).round().astype(np.uint8)


class WandbMedia(Callback):
    """Every ``every_n_epochs``: ``num_clouds`` clouds (``<= max_points`` points each), the
    confusion matrix and per-class accuracy of the validation set, logged under ``media/``."""

    def __init__(self, num_clouds: int = 4, max_points: int = 2048, every_n_epochs: int = 1) -> None:
        self.num_clouds = num_clouds
        self.max_points = max_points
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._confusion: torch.Tensor | None = None
        self._clouds: list[dict[str, np.ndarray]] = []

    @staticmethod
    def _wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._confusion, self._clouds = None, []
        active = (trainer.current_epoch + 1) % self.every_n_epochs == 0 and not trainer.sanity_checking
        if active and self._wandb_loggers(trainer):  # same answer on every rank: collectives stay paired
            c = int(pl_module.num_classes)
            self._confusion = torch.zeros(c, c, dtype=torch.long, device=pl_module.device)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._confusion is None or dataloader_idx != 0:
            return
        if not isinstance(batch, dict):
            return
        out = getattr(pl_module, "step_outputs", None) or (outputs if isinstance(outputs, dict) else {})
        if "index" in out and "index" in batch and not torch.equal(out["index"].cpu(), batch["index"].cpu()):
            return  # stale outputs of another step: better no media than wrong media
        label = out.get("label", batch.get("label"))
        preds = out.get("preds")
        if preds is None and "logits" in out:
            preds = out["logits"].argmax(-1)
        if preds is None or label is None or preds.shape != label.shape:
            return
        c = self._confusion.shape[0]
        label, preds = label.reshape(-1).to(self._confusion.device), preds.reshape(-1).to(self._confusion.device)
        ok = (label >= 0) & (label < c)
        self._confusion += torch.bincount(label[ok] * c + preds[ok], minlength=c * c).reshape(c, c)
        if trainer.is_global_zero and len(self._clouds) < self.num_clouds and "points" in batch:
            self._take_clouds(batch, label, preds)

    def _take_clouds(self, batch: dict, label: torch.Tensor, preds: torch.Tensor) -> None:
        points = batch["points"].detach().float().cpu().numpy()
        offsets = batch.get("point_offsets")
        offsets = [0, len(points)] if offsets is None else offsets.cpu().tolist()
        per_point = label.numel() == len(points)  # segmentation: one label per input point
        colours = palette(self._confusion.shape[0])
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

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._confusion is None:
            return
        confusion = trainer.strategy.reduce(self._confusion, reduce_op="sum")  # collective: all ranks
        if trainer.is_global_zero:
            payload = self._payload(confusion.cpu(), getattr(pl_module, "class_names", None))
            for logger in self._wandb_loggers(trainer):
                logger.log_metrics(payload, step=trainer.global_step)
        self._confusion, self._clouds = None, []

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
