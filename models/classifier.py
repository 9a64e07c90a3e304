"""Shape classification LightningModule: inflated sparse ResNet + head + FIP regime.

Metrics are torchmetrics objects so every rank's counts are merged at ``compute`` time;
no step-level collectives, because DDP evaluation loaders do not pad and ranks may see
different numbers of batches (a per-step all-reduce would then deadlock).
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from i2p.checkpoint_file import peek_checkpoint
from i2p.inflate import InflateConfig
from i2p.sparse import BackendName, set_backend
from models.backbones import create_sparse_resnet
from models.backbones.heads import HeadKind
from models.backbones.resnet import Stem
from models.finetune import RegimeName, apply_regime, get_regime, trainable_parameters
from models.optim import OptimizerName, SchedulerName, optimizers_from_hparams
from models.weights import (
    SLIM_KEY,
    loading_from_checkpoint,
    tensors_digest,
    weights_from_checkpoint,
)

__all__ = ["PointClassifier"]


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)).strip("_") or "class"


class PointClassifier(pl.LightningModule):
    """Classifies voxelized point clouds with an inflated 2D ResNet (Image2Point).

    Args:
        backbone: timm ResNet name (``resnet18``, ``resnet50``, ...).
        num_classes: linked from the DataModule by the CLI.
        regime: FIP regime, one of ``io``, ``ioms``, ``iobn``, ``all``, ``scratch`` (docs/regimes.md).
        pretrained: False, True (timm weights) or a path to a 2D timm state dict (``.pth``).
        inflate: the inflation settings, ``InflateConfig`` (YAML ``inflate: {kernel_mode: copy,
            depth_axis: y, shortcut: repeat}``; docs/inflation.md).
        stem, head: the new input layer and output head (docs/inflation.md).
        label_smoothing: cross-entropy label smoothing.
        optimizer: ``sgd`` or ``adamw``; lr, momentum, weight_decay, nesterov as usual.
        scheduler: ``cosine``, ``poly`` or ``none``, stepped per epoch, after ``warmup_epochs``
            of linear warm-up; the horizon is the trainer's ``max_epochs``.
        test_votes: test-time voting: logits averaged over the batch and ``test_votes - 1`` views
            transformed and re-voxelised by the DataModule's ``vote_views`` (scale / rotation);
            ``test/acc_vote`` and ``test/macc_vote`` are logged beside the plain ``test/acc``.
        class_names: for per-class accuracy keys and predictions; linked from the DataModule by the CLI.
        slim_checkpoint: write checkpoints without the frozen copied tensors (FIP-IO: ~0.1 % of a
            full one), with their SHA-256 instead; loading one rebuilds them from ``pretrained``
            and refuses other weights. Full checkpoints (the default) load without the 2D source.
        backend: which library runs the sparse convs (``auto``, ``i2p``, ``spconv``, ``torchsparse``;
            None: the engine-wide default, docs/engine.md). Outputs and checkpoints do not change with it.

    ``PointClassifier.load_from_checkpoint(path)`` of a full checkpoint needs neither the 2D file
    nor the hub (the checkpoint holds every tensor); the preprocessing the model was trained with
    is in the same file (``datamodule_hyper_parameters``, read by ``i2p predict``).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 40,
        in_channels: int = 3,
        regime: RegimeName = "io",
        pretrained: bool | str = False,
        inflate: InflateConfig = InflateConfig(),
        stem: Stem = "new",
        head: HeadKind = "linear_bn",
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
        test_votes: int = 1,
        slim_checkpoint: bool = False,
        backend: BackendName | None = None,
    ) -> None:
        super().__init__()
        self.regime = get_regime(regime)
        inflate = InflateConfig.coerce(inflate)
        if test_votes < 1:
            raise ValueError(f"test_votes must be >= 1, got {test_votes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.save_hyperparameters(ignore=["inflate"])
        self.save_hyperparameters({"inflate": inflate.as_dict()})  # plain data: checkpoints load weights_only

        self.backbone = create_sparse_resnet(
            backbone,
            pretrained=pretrained if self.regime.needs_pretrained and not loading_from_checkpoint() else False,
            inflate=inflate,
            stem=stem,
            in_channels=in_channels,
            num_classes=num_classes,
            head=head,
        )
        set_backend(self.backbone, backend)
        # the regime's rule keeps frozen BN layers in eval through Lightning's model.train()
        self.regime_summary = apply_regime(self, self.regime)

        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        #: the last epoch's confusion matrix per split ("val", "test"), summed over ranks; rows = truth
        self.confusion: dict[str, Tensor] = {}
        self._frozen_digest: str | None = None  # of the omitted tensors of slim checkpoints (they never change)

        def acc(average: str) -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=num_classes, average=average)

        self.train_acc, self.train_macc = acc("micro"), acc("macro")
        self.val_acc, self.val_macc = acc("micro"), acc("macro")
        self.test_acc, self.test_macc = acc("micro"), acc("macro")
        self.test_acc_vote, self.test_macc_vote = acc("micro"), acc("macro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)

    # ----------------------------------------------------------------- forward
    def forward(self, x: Any) -> Tensor:
        """Logits ``[B, num_classes]`` of a batch ``SparseTensor``."""
        return self.extract(x)[1]

    def extract(self, x: Any) -> tuple[Tensor, Tensor]:
        """Pooled penultimate features ``[B, D]`` (the head's input) and logits."""
        pooled = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return pooled, self.backbone.head(pooled)

    @property
    def head_weight(self) -> Tensor:
        """Effective linear classifier ``[num_classes, D]`` on the pooled features (for NC3).

        With the paper's head (Linear then BatchNorm1d on the logits) the eval-mode classifier is
        ``diag(gamma / sqrt(running_var + eps)) @ W``: the BN rescales each class's row, which
        changes the directions NC3 compares with the class means.
        """
        weight = self.backbone.get_classifier().weight
        norm = getattr(getattr(self.backbone, "head", None), "norm", None)
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None:
            scale = torch.rsqrt(norm.running_var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight
            weight = scale[:, None] * weight
        return weight

    # ------------------------------------------------------------------- steps
    def _shared_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The step dict of docs/conventions.md: ``loss`` (with its graph) and detached
        ``features``, ``logits``, ``preds``, ``label``, ``index``.
        """
        features, logits = self.extract(batch["x"])
        label = batch["label"]
        loss = F.cross_entropy(logits, label, label_smoothing=self.hparams.label_smoothing)
        index = batch.get("index")
        return {
            "loss": loss,
            "features": features.detach(),
            "logits": logits.detach(),
            "preds": logits.detach().argmax(dim=1),
            "label": label,
            "index": index if isinstance(index, Tensor) else torch.arange(len(label), device=label.device),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        step = self._shared_step(batch)
        bs, preds, label = len(step["label"]), step["preds"], step["label"]
        self.train_acc(preds, label)
        self.train_macc(preds, label)
        self.log("train/loss", step["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/macc", self.train_macc, on_step=False, on_epoch=True, batch_size=bs)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                     batch_size=bs)
        return step

    def _eval_step(self, batch: dict[str, Any], split: str) -> dict[str, Tensor]:
        step = self._shared_step(batch)
        step["loss"] = step["loss"].detach()
        bs, preds, label = len(step["label"]), step["preds"], step["label"]
        getattr(self, f"{split}_loss").update(step["loss"], weight=bs)
        getattr(self, f"{split}_acc").update(preds, label)
        getattr(self, f"{split}_macc").update(preds, label)
        getattr(self, f"{split}_confusion").update(preds, label)
        kw = dict(on_step=False, on_epoch=True, batch_size=bs)
        self.log(f"{split}/loss", getattr(self, f"{split}_loss"), prog_bar=True, **kw)
        self.log(f"{split}/acc", getattr(self, f"{split}_acc"), prog_bar=True, **kw)
        self.log(f"{split}/macc", getattr(self, f"{split}_macc"), **kw)
        return step

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        step = self._eval_step(batch, "test")
        votes = self.hparams.test_votes
        if votes > 1:
            logits = self.vote_logits(batch, votes, plain=step["logits"])
            step["logits_vote"] = logits
            preds, bs = logits.argmax(dim=1), len(step["label"])
            self.test_acc_vote.update(preds, step["label"])
            self.test_macc_vote.update(preds, step["label"])
            self.log("test/acc_vote", self.test_acc_vote, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
            self.log("test/macc_vote", self.test_macc_vote, on_step=False, on_epoch=True, batch_size=bs)
        return step

    # ----------------------------------------------------------------- voting
    @torch.no_grad()
    def vote_logits(self, batch: dict[str, Any], votes: int, plain: Tensor | None = None,
                    datamodule: Any = None) -> Tensor:
        """Mean logits over view 0 (``batch["x"]``, or its given ``plain`` logits) and the
        ``votes - 1`` views of ``datamodule.vote_views`` (default: the trainer's DataModule, which
        owns the voxel settings); ``votes`` = 1 is the plain forward.
        """
        logits = self(batch["x"]) if plain is None else plain
        if votes == 1:
            return logits
        source = datamodule if datamodule is not None else getattr(self._trainer, "datamodule", None)
        if not callable(getattr(source, "vote_views", None)):
            raise RuntimeError("test_votes > 1 needs a DataModule with vote_views(batch, votes) (every "
                               "VoxelDataModule has one): test through trainer.test(model, datamodule=...)")
        total = logits.clone()
        for x in source.vote_views(batch, votes):
            total += self(x)
        return total / votes

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        features, logits = self.extract(batch["x"])
        out = {"logits": logits, "preds": logits.argmax(1)}
        if "index" in batch:
            out["index"] = batch["index"]
        return out

    # --------------------------------------------------------- per-class accuracy
    def _epoch_confusion(self, split: str) -> None:
        """Compute (synced across ranks, once per epoch on every rank) and keep the split's confusion
        matrix, the one owner of it: per-class accuracy is logged from it, callbacks read it.
        """
        metric: MulticlassConfusionMatrix = getattr(self, f"{split}_confusion")
        if not metric.update_called:
            return
        cm = metric.compute()
        metric.reset()
        self.confusion[split] = cm.detach().cpu()
        support = cm.sum(1)
        per_class = cm.diag().float() / support.clamp_min(1).float()
        names = self.class_names or [f"class{i:02d}" for i in range(self.num_classes)]
        for i, name in enumerate(names):
            if support[i] > 0:
                self.log(f"{split}_per_class/acc_{_sanitize(name)}", per_class[i], sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._epoch_confusion("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_confusion("test")

    # ------------------------------------------------------------- checkpoints
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | os.PathLike, *args: Any, **kwargs: Any) -> PointClassifier:
        """Lightning's ``load_from_checkpoint``; a full checkpoint needs no 2D source weights (nor the hub),
        a slim one rebuilds its frozen tensors from them and checks their digest.
        """
        if SLIM_KEY in peek_checkpoint(checkpoint_path):
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        with weights_from_checkpoint():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def slim_omitted_keys(self) -> list[str]:
        """State-dict keys a slim checkpoint leaves out: frozen tensors copied from the 2D network (their BN
        running statistics stay in: they are small and may move, as in ``ioms``).
        """
        fresh = tuple(f"backbone.{p}" for p in self.backbone.fresh_prefixes())
        return [name for name, p in self.named_parameters()
                if not p.requires_grad and name.startswith("backbone.") and not name.startswith(fresh)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.hparams.get("slim_checkpoint"):
            return
        keys = self.slim_omitted_keys()
        if not keys:  # everything trains (all, scratch): slim is full
            return
        state = checkpoint["state_dict"]
        if self._frozen_digest is None:
            self._frozen_digest = tensors_digest({k: state[k] for k in keys})
        for k in keys:
            del state[k]
        checkpoint[SLIM_KEY] = {"omitted": keys, "digest": self._frozen_digest,
                                "source": str(self.hparams.pretrained)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(SLIM_KEY)
        if meta is None:
            return
        source = meta.get("source")
        if loading_from_checkpoint() or not self.hparams.pretrained or not self.regime.needs_pretrained:
            raise ValueError(f"slim checkpoint: its {len(meta['omitted'])} frozen tensors come from the 2D weights "
                             f"{source!r}, which were not loaded; build the model with pretrained={source!r}")
        own = self.state_dict()
        missing = [k for k in meta["omitted"] if k not in own]
        if missing:
            raise ValueError(f"slim checkpoint: this model has no tensors {missing[:5]} (another architecture?)")
        digest = tensors_digest({k: own[k] for k in meta["omitted"]})
        if digest != meta["digest"]:
            raise ValueError(f"slim checkpoint refused: the frozen tensors rebuilt from {self.hparams.pretrained!r} "
                             f"(sha256 {digest[:16]}...) differ from the ones it was trained with (sha256 "
                             f"{meta['digest'][:16]}..., source {source!r}); use those 2D weights, or a full "
                             "checkpoint (slim_checkpoint: false)")
        state = checkpoint["state_dict"]
        for k in meta["omitted"]:
            state[k] = own[k]

    # -------------------------------------------------------------- regime
    def on_fit_start(self) -> None:
        rank_zero_info(f"[PointClassifier] {self.regime_summary}")
        frozen = not self.regime.train_copied_kernels
        resumed = self._trainer is not None and self.trainer.ckpt_path  # the weights come from the checkpoint
        if self.regime.needs_pretrained and frozen and not self.hparams.pretrained and not resumed:
            rank_zero_warn(f"regime {self.regime.name!r} without pretrained weights trains on frozen random layers")

    # ----------------------------------------------------------- optimization
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Only what the regime left trainable goes to the optimizer."""
        return list(trainable_parameters(self))

    def configure_optimizers(self) -> Any:
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return optimizers_from_hparams(self.trainable_parameters(), self.hparams, max_epochs)
