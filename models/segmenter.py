"""Point-cloud segmentation LightningModule: inflated sparse ResUNet + FIP regime, point-level metrics.

Training runs on voxels (each voxel's representative point: its label and its devoxelised
features); validation and test score **every original point** (the batch's ``inverse`` map,
or trilinear devoxelisation at each point). Metrics come from one torchmetrics confusion matrix
per split (state summed across ranks once per epoch, no step-level collectives; the evaluation
loaders do not pad, so 1 and N processes give the same numbers): per-class IoU, mIoU, overall
and mean class accuracy, a class absent from truth and prediction left out of the mean
(``models.metrics``). Part segmentation (``num_categories > 0``) adds instance- and
category-average part mIoU, with predictions restricted to the parts of each shape's category.
Conventions: docs/conventions.md ("A segmenter"), docs/segmentation.md.
"""

from __future__ import annotations

import re
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from i2p.inflate import InflateConfig
from i2p.sparse import BackendName, set_backend
from models.backbones.unet import create_sparse_resunet
from models.finetune import RegimeName, apply_regime, get_regime, trainable_parameters
from models.metrics import PART_ABSENT, PartIoU, segmentation_scores
from models.optim import OptimizerName, SchedulerName, optimizers_from_hparams

__all__ = ["PointSegmenter", "point_batch_index", "representatives"]


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)).strip("_") or "class"


def point_batch_index(point_offsets: Tensor) -> Tensor:
    """The sample of every point ``[P]`` from ``point_offsets [B + 1]``."""
    counts = point_offsets[1:] - point_offsets[:-1]
    return torch.repeat_interleave(torch.arange(len(counts), device=point_offsets.device), counts)


def representatives(inverse: Tensor, num_voxels: int) -> Tensor:
    """One point per voxel ``[N]``: the first point (lowest index) mapping to it, as ``sparse_quantize``."""
    points = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((num_voxels,), len(inverse), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, points, reduce="amin", include_self=True)
    if bool((first == len(inverse)).any()):
        raise ValueError("a voxel has no point in the inverse map: inverse must cover every voxel")
    return first


class PointSegmenter(pl.LightningModule):
    """Per-point labels of voxelised scenes or shapes with an inflated 2D ResNet encoder (Image2Point).

    Args:
        backbone: timm ResNet name of the encoder (``resnet18``, ``resnet18.tv_in1k``, ``resnet50``...).
        num_classes, in_channels, class_names: linked from the DataModule by the CLI.
        regime: FIP regime (docs/regimes.md) on the encoder: under ``io`` the stem, down-sample,
            decoder and head train, the inflated ``layer1..layer4`` are frozen (BN in eval mode).
        pretrained: False, True (timm weights) or a 2D / ``i2p inflate`` checkpoint path.
        inflate: ``InflateConfig`` (YAML ``inflate: {kernel_mode: copy, depth_axis: y, shortcut: repeat}``).
        preset, decoder_channels, devoxelize: the UNet's (``models.backbones.SparseResUNet``).
        ignore_index: label of points that never count, in the loss or the metrics.
        num_categories, category_parts: part segmentation; ``category_parts[k]`` lists the part ids of
            category ``k`` (taken from ``trainer.datamodule.category_parts`` at setup when None).
        part_iou_absent: ``skip`` (a part absent from a shape's truth and prediction is left out
            of its mean) or ``one`` (PointNet's protocol, scores it 1).
        label_smoothing, optimizer, lr, momentum, weight_decay, nesterov, scheduler,
            warmup_epochs, poly_power: as ``PointClassifier``.
        backend: which library runs the sparse convs (``auto``, ``i2p``, ``spconv``, ``torchsparse``;
            None: the engine-wide default, docs/engine.md). Outputs and checkpoints do not change with it.
    """

    #: what callbacks read to treat step outputs per point (docs/conventions.md)
    task = "segmentation"

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 13,
        in_channels: int = 6,
        regime: RegimeName = "io",
        pretrained: bool | str = False,
        inflate: InflateConfig = InflateConfig(),
        preset: str = "official",
        decoder_channels: list[int] | None = None,
        devoxelize: str = "trilinear",
        ignore_index: int = -100,
        num_categories: int = 0,
        category_parts: list[list[int]] | None = None,
        part_iou_absent: str = "skip",
        label_smoothing: float = 0.0,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = False,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: int = 0,
        poly_power: float = 0.9,
        class_names: list[str] | None = None,
        backend: BackendName | None = None,
    ) -> None:
        super().__init__()
        self.regime = get_regime(regime)
        inflate = InflateConfig.coerce(inflate)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if part_iou_absent not in PART_ABSENT:
            raise ValueError(f"part_iou_absent must be one of {PART_ABSENT}, got {part_iou_absent!r}")
        if category_parts is not None:
            self._check_parts(category_parts, num_categories, num_classes)
        self.save_hyperparameters(ignore=["inflate"])
        self.save_hyperparameters({"inflate": inflate.as_dict()})

        self.backbone = create_sparse_resunet(
            backbone,
            pretrained=pretrained if self.regime.needs_pretrained else False,
            inflate=inflate,
            in_channels=in_channels,
            num_classes=num_classes,
            preset=preset,
            decoder_channels=decoder_channels,
            devoxelize=devoxelize,
            num_categories=num_categories,
        )
        set_backend(self.backbone, backend)
        self.regime_summary = apply_regime(self, self.regime)

        self.num_classes, self.ignore_index, self.num_categories = num_classes, ignore_index, num_categories
        self.class_names = list(class_names) if class_names is not None else None
        #: the last epoch's point-level confusion matrix per split ("train" on voxels, "val", "test"); rows = truth
        self.confusion: dict[str, Tensor] = {}
        #: the last epoch's scores per split (``models.metrics.segmentation_scores``, plus part mIoU)
        self.scores: dict[str, dict[str, Any]] = {}

        def confusion() -> MulticlassConfusionMatrix:
            return MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index)

        self.train_confusion, self.val_confusion, self.test_confusion = confusion(), confusion(), confusion()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_parts: PartIoU | None = None
        self.test_parts: PartIoU | None = None
        if category_parts is not None:
            self._make_part_metrics(category_parts)

    # ------------------------------------------------------------------ part segmentation set-up
    @staticmethod
    def _check_parts(parts: list[list[int]], num_categories: int, num_classes: int) -> None:
        if len(parts) != num_categories:
            raise ValueError(f"category_parts has {len(parts)} categories, num_categories is {num_categories}")
        bad = [p for ps in parts for p in ps if not 0 <= int(p) < num_classes]
        if bad or any(not ps for ps in parts):
            raise ValueError(f"category_parts must list non-empty part ids in [0, {num_classes}), got {parts}")

    def _make_part_metrics(self, parts: list[list[int]]) -> None:
        hp = self.hparams
        self.val_parts = PartIoU(parts, hp.part_iou_absent, hp.ignore_index)
        self.test_parts = PartIoU(parts, hp.part_iou_absent, hp.ignore_index)
        allowed = torch.zeros(len(parts), self.num_classes, dtype=torch.bool)
        for k, ps in enumerate(parts):
            allowed[k, list(ps)] = True
        self.register_buffer("part_mask", allowed, persistent=False)

    def setup(self, stage: str) -> None:
        """Part segmentation without ``category_parts``: take the DataModule's table (and keep it in
        the checkpoint's hyper-parameters, so a reloaded model restricts predictions alike).
        """
        if self.num_categories and self.hparams.category_parts is None:
            parts = getattr(getattr(self.trainer, "datamodule", None), "category_parts", None)
            if parts is None:
                raise ValueError("num_categories > 0 needs category_parts (or a DataModule with category_parts)")
            parts = [list(map(int, p)) for p in parts]
            self._check_parts(parts, self.num_categories, self.num_classes)
            self.hparams.category_parts = parts
            self._make_part_metrics(parts)
            self.part_mask = self.part_mask.to(self.device)

    # ----------------------------------------------------------------- forward
    def segment(self, batch: dict[str, Any], at: str = "points") -> dict[str, Tensor]:
        """Head input ``features [R, D]``, ``logits [R, C]``, ``preds [R]`` and ``label [R]`` on rows
        ``R``: every input point (``at="points"``) or each voxel's representative point (``"voxels"``).
        """
        if at not in ("points", "voxels"):
            raise ValueError(f"at must be 'points' or 'voxels', got {at!r}")
        x, inverse, offsets = batch["x"], batch["inverse"], batch["point_offsets"]
        point_batch = point_batch_index(offsets)
        label = batch.get("label")
        points = batch.get("points")
        rows = None
        if at == "voxels":
            rows = representatives(inverse, len(x))
            inverse = torch.arange(len(x), device=inverse.device)
        net = self.backbone
        feats = net.forward_features(x)
        if net.devoxelize_mode == "trilinear":
            if "voxel_size" not in batch or points is None:
                raise ValueError("trilinear devoxelisation needs batch['points'] and batch['voxel_size'] (the "
                                 "segmentation DataModules provide them); or use devoxelize='nearest'")
            pts = points if rows is None else points[rows]
            pb = point_batch if rows is None else point_batch[rows]
            point_feats = net.point_features(feats, pts, pb, float(batch["voxel_size"]))
        else:
            point_feats = net.point_features(feats, inverse=inverse)
        category = None
        if self.num_categories:
            if "category" not in batch:
                raise ValueError("part segmentation needs batch['category'] (one category per shape)")
            category = batch["category"][point_batch if rows is None else point_batch[rows]]
        features = net.head_input(point_feats, category)
        logits = net.forward_head(features)
        out = {"features": features, "logits": logits, "preds": self.predict_labels(logits.detach(), category)}
        if label is not None:
            out["label"] = label if rows is None else label[rows]
        return out

    def predict_labels(self, logits: Tensor, category: Tensor | None = None) -> Tensor:
        """Arg-max labels; with categories, only among the parts of each point's category."""
        if category is not None and getattr(self, "part_mask", None) is not None:
            logits = logits.masked_fill(~self.part_mask[category], float("-inf"))
        return logits.argmax(1)

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Logits at every input point ``[P, num_classes]`` of a batch dict (docs/conventions.md)."""
        return self.segment(batch, "points")["logits"]

    @property
    def head_weight(self) -> Tensor:
        """The linear classifier ``[num_classes, D]`` on the head input (NC3)."""
        return self.backbone.get_classifier().weight

    # ------------------------------------------------------------------- steps
    def _step(self, batch: dict[str, Any], at: str) -> dict[str, Tensor]:
        out = self.segment(batch, at)
        label = out["label"]
        valid = label != self.ignore_index
        if bool(valid.any()):
            loss = F.cross_entropy(out["logits"], label, ignore_index=self.ignore_index,
                                   label_smoothing=self.hparams.label_smoothing)
        else:  # a crop of ignored points only: no signal, but keep the graph for DDP
            loss = out["logits"].sum() * 0.0
        index = batch.get("index")
        return {
            "loss": loss,
            "features": out["features"].detach(),
            "logits": out["logits"].detach(),
            "preds": out["preds"],
            "label": label,
            "index": index if isinstance(index, Tensor) else torch.arange(len(batch["point_offsets"]) - 1),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        step = self._step(batch, "voxels")
        bs = len(step["index"])
        self.train_confusion.update(step["preds"], step["label"])
        self.log("train/loss", step["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                     batch_size=bs)
        return step

    def _eval_step(self, batch: dict[str, Any], split: str) -> dict[str, Tensor]:
        step = self._step(batch, "points")
        step["loss"] = step["loss"].detach()
        bs = len(step["index"])
        valid = int((step["label"] != self.ignore_index).sum())  # per-point mean: exact whatever the batching
        getattr(self, f"{split}_loss").update(step["loss"], weight=valid)
        getattr(self, f"{split}_confusion").update(step["preds"], step["label"])
        parts: PartIoU | None = getattr(self, f"{split}_parts")
        if parts is not None:
            parts.update(step["preds"], step["label"], batch["category"], batch["point_offsets"])
        self.log(f"{split}/loss", getattr(self, f"{split}_loss"), on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=bs)
        return step

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        out = self.segment(batch, "points")
        result = {"logits": out["logits"], "preds": out["preds"], "point_offsets": batch["point_offsets"]}
        if "index" in batch:
            result["index"] = batch["index"]
        return result

    # --------------------------------------------------------------- epoch metrics
    def _epoch_scores(self, split: str) -> None:
        """Compute (synced across ranks, once per epoch, on every rank) and log the split's scores
        from its confusion matrix; keep the matrix (callbacks draw it) and the scores.
        """
        metric: MulticlassConfusionMatrix = getattr(self, f"{split}_confusion")
        if not metric.update_called:
            return
        cm = metric.compute()
        metric.reset()
        self.confusion[split] = cm.detach().cpu()
        scores = segmentation_scores(cm)
        kw = dict(sync_dist=False)  # already merged across ranks: every rank logs the same floats
        self.log(f"{split}/miou", scores["miou"], prog_bar=split != "train", **kw)
        self.log(f"{split}/oacc", scores["oacc"], **kw)
        self.log(f"{split}/macc", scores["macc"], **kw)
        if split != "train":
            names = self.class_names or [f"class{i:02d}" for i in range(self.num_classes)]
            for name, iou in zip(names, scores["iou"].tolist()):
                if iou == iou:  # NaN: absent from truth and prediction, nothing to report
                    self.log(f"{split}/iou_{_sanitize(name)}", iou, **kw)
        parts: PartIoU | None = getattr(self, f"{split}_parts", None)
        if parts is not None and parts.update_called:
            instance, category, _ = parts.compute()
            parts.reset()
            scores["ins_miou"], scores["cat_miou"] = float(instance), float(category)
            self.log(f"{split}/ins_miou", scores["ins_miou"], prog_bar=True, **kw)
            self.log(f"{split}/cat_miou", scores["cat_miou"], **kw)
        self.scores[split] = scores

    def on_train_epoch_end(self) -> None:
        self._epoch_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._epoch_scores("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_scores("test")

    # -------------------------------------------------------------- regime
    def on_fit_start(self) -> None:
        rank_zero_info(f"[PointSegmenter] {self.regime_summary}")
        frozen = not self.regime.train_copied_kernels
        if self.regime.needs_pretrained and frozen and not self.hparams.pretrained:
            rank_zero_warn(f"regime {self.regime.name!r} without pretrained weights trains on frozen random layers")

    # ----------------------------------------------------------- optimization
    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(trainable_parameters(self))

    def configure_optimizers(self) -> Any:
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return optimizers_from_hparams(self.trainable_parameters(), self.hparams, max_epochs)
