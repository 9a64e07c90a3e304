"""Neural-collapse metrics logged during fit: a thin Lightning layer over :mod:`i2p.collapse`.

- ``val``: features of the validation pass itself (the ``validation_step`` outputs of
  docs/conventions.md), so no extra forward; the evaluation loaders do not pad, so each sample
  counts once across ranks.
- ``train``: an extra pass over ``trainer.datamodule.train_eval_dataloader()`` (test-time
  transforms) in eval mode at the end of the training epoch; collapse is a training-set property.
Statistics are all-reduced and rank 0's values broadcast, so every rank logs the same floats
with ``sync_dist=False`` (nothing to synchronise, no collective hidden inside ``self.log``).

Segmentation (a module with ``task == "segmentation"``, docs/conventions.md): the rows are points
(the per-point head inputs of the step outputs, or of ``pl_module.segment(batch)`` on the training
pass), at most ``max_points_per_sample`` of each sample, drawn by a generator seeded by the
sample's index (the same rows whatever rank or batch holds it), ``ignore_index`` points left out:
memory stays bounded by samples x ``max_points_per_sample`` x D.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset

from callbacks.run_dir import run_directory
from i2p.collapse import CollapseStats, reduce_and_compute
from i2p.io import atomic_path

__all__ = ["METRICS", "NeuralCollapse"]

#: keys logged as ``nc/<split>/<key>`` at every active epoch (NaN where undefined)
METRICS = (
    "nc1", "cdnv", "ncc_mismatch", "ncc_accuracy", "net_accuracy", "nc2_norm_cv", "nc2_cos_std",
    "nc2_etf_dev", "nc3", "tr_sw", "tr_sb", "num_samples", "classes_present", "classes_absent",
)  # fmt: skip
_PLOTTED = ("nc1", "cdnv", "ncc_mismatch", "nc2_etf_dev", "nc3")


class NeuralCollapse(Callback):
    """Log ``nc/<split>/<metric>`` every ``every_n_epochs`` and plot their curves.

    ``max_train_batches`` caps the training pass per rank (cheaper, but then statistics cover
    a subset). ``keep_features=False`` saves memory (N x D floats per rank) but drops NCC.
    ``max_points_per_sample``: rows kept per sample for segmentation (see the module docstring).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        splits: Sequence[str] = ("train", "val"),
        max_train_batches: int | None = None,
        plot: bool = True,
        keep_features: bool = True,
        filename: str = "neural_collapse.png",
        max_points_per_sample: int = 256,
    ) -> None:
        unknown = set(splits) - {"train", "val"}
        if unknown:
            raise ValueError(f"unknown splits {sorted(unknown)}; use 'train' and/or 'val'")
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.splits = tuple(splits)
        self.max_train_batches = max_train_batches
        self.plot = plot
        self.keep_features = keep_features
        self.filename = filename
        if max_points_per_sample < 1:
            raise ValueError(f"max_points_per_sample must be >= 1, got {max_points_per_sample}")
        self.max_points_per_sample = int(max_points_per_sample)
        self.history: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.seconds: dict[int, float] = {}  # callback time per epoch (for overhead figures)
        self._val: CollapseStats | None = None
        self._run_dir: str | None = None
        self._train_loader: Any = None  # built once per fit: workers are not respawned every epoch

    # ------------------------------------------------------------------ helpers
    def _active(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    @staticmethod
    def _num_classes(trainer: Trainer, pl_module: LightningModule) -> int:
        n = getattr(pl_module, "num_classes", None) or getattr(trainer.datamodule, "num_classes", None)
        if n is None:
            raise AttributeError("NeuralCollapse needs `num_classes` on the model or the datamodule")
        return int(n)

    @staticmethod
    def _reduce(pl_module: LightningModule, stats: CollapseStats) -> dict[str, float]:
        """Collective. The head weight is checked against the dimension known after the reduce
        (a rank without samples does not know it before).
        """
        stats.all_reduce()
        w = getattr(pl_module, "head_weight", None)
        if isinstance(w, torch.Tensor) and stats.dim is not None and tuple(w.shape) == (stats.num_classes, stats.dim):
            return reduce_and_compute(stats, w.detach())
        return reduce_and_compute(stats)  # no linear head on the features: NC3 stays NaN

    def _log(self, trainer: Trainer, pl_module: LightningModule, split: str, result: dict[str, float]) -> None:
        for key in METRICS:
            value = result.get(key, math.nan)
            pl_module.log(f"nc/{split}/{key}", value, on_step=False, on_epoch=True, sync_dist=False,
                          rank_zero_only=False)
            self.history.setdefault(split, {}).setdefault(key, []).append((trainer.current_epoch, value))

    def _add_time(self, trainer: Trainer, t0: float) -> None:
        self.seconds[trainer.current_epoch] = self.seconds.get(trainer.current_epoch, 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._run_dir = run_directory(trainer)  # collective: all ranks call
        self._train_loader = None

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val = None
        if "val" in self.splits and self._active(trainer):
            self._val = CollapseStats(self._num_classes(trainer, pl_module), keep_features=self.keep_features)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._val is None or dataloader_idx != 0:
            return
        t0 = time.perf_counter()
        if not (isinstance(outputs, dict) and {"features", "label", "preds"} <= set(outputs)):
            raise TypeError("NeuralCollapse needs validation_step to return the step dict of docs/conventions.md "
                            f"(features, label, preds), got {type(outputs).__name__}")
        features, labels, preds = outputs["features"], outputs["label"], outputs["preds"]
        if _segmentation(pl_module):
            features, labels, preds = self._point_rows(pl_module, batch, features, labels, preds)
        self._val.update(features.float(), labels, preds)
        self._add_time(trainer, t0)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._val is None:
            return
        t0 = time.perf_counter()
        stats, self._val = self._val, None
        self._log(trainer, pl_module, "val", self._reduce(pl_module, stats))
        self._add_time(trainer, t0)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active(trainer):
            return
        t0 = time.perf_counter()
        if "train" in self.splits:
            stats = self._train_pass(trainer, pl_module)
            if stats is not None:
                self._log(trainer, pl_module, "train", self._reduce(pl_module, stats))
        if self.plot and trainer.is_global_zero and self.history:
            self._save_plot(trainer)
        self._add_time(trainer, t0)

    # ------------------------------------------------------------------ training pass
    def _train_pass(self, trainer: Trainer, pl_module: LightningModule) -> CollapseStats | None:
        make = getattr(trainer.datamodule, "train_eval_dataloader", None)
        if make is None or not (hasattr(pl_module, "extract") or _segmentation(pl_module)):
            rank_zero_warn("NeuralCollapse: no datamodule.train_eval_dataloader() or model.extract(); train split "
                           "skipped")
            return None
        if self._train_loader is None:
            self._train_loader = _shard(make(), trainer.world_size, trainer.global_rank)
        loader, shard = self._train_loader
        _broadcast_buffers(pl_module)
        stats = CollapseStats(self._num_classes(trainer, pl_module), keep_features=self.keep_features)
        modes = {m: m.training for m in pl_module.modules()}  # restore per module: frozen BN stays eval
        pl_module.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                for i, batch in enumerate(loader):
                    if self.max_train_batches is not None and i >= self.max_train_batches:
                        break
                    batch = pl_module.on_before_batch_transfer(batch, 0)
                    batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                    batch = pl_module.on_after_batch_transfer(batch, 0)
                    if _segmentation(pl_module):
                        out = pl_module.segment(batch, "points")
                        features, labels, preds = self._point_rows(pl_module, batch, out["features"], out["label"],
                                                                   out["preds"], shard)
                        stats.update(features.float(), labels, preds)
                        continue
                    features, logits = pl_module.extract(batch["x"])
                    labels, preds = batch["label"], logits.argmax(-1)
                    if shard is not None:  # loader could not be re-sharded: keep this rank's indices
                        mine = batch["index"].to(labels.device) % shard[1] == shard[0]
                        features, labels, preds = features[mine], labels[mine], preds[mine]
                    stats.update(features.float(), labels, preds)
        finally:
            for m, training in modes.items():
                m.training = training
        return stats

    def _point_rows(self, pl_module: LightningModule, batch: dict, features: torch.Tensor, labels: torch.Tensor,
                    preds: torch.Tensor, shard: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At most ``max_points_per_sample`` valid rows of each sample, chosen by its index (segmentation)."""
        offsets, index = batch["point_offsets"].tolist(), batch["index"].tolist()
        ignore = getattr(pl_module, "ignore_index", -100)
        labels_cpu = labels.reshape(-1).cpu()
        rows = []
        for b, sample in enumerate(index):
            if shard is not None and sample % shard[1] != shard[0]:
                continue
            lo, hi = offsets[b], offsets[b + 1]
            valid = torch.nonzero((labels_cpu[lo:hi] != ignore) & (labels_cpu[lo:hi] >= 0)).flatten()
            if len(valid) > self.max_points_per_sample:
                gen = torch.Generator().manual_seed(int(sample))
                valid = valid[torch.randperm(len(valid), generator=gen)[: self.max_points_per_sample]].sort().values
            rows.append(valid + lo)
        keep = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
        keep = keep.to(features.device)
        return features[keep], labels.reshape(-1)[keep], preds.reshape(-1)[keep]

    # ------------------------------------------------------------------ plot
    def _save_plot(self, trainer: Trainer) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        run_dir = self._run_dir or trainer.default_root_dir
        fig, axes = plt.subplots(1, len(_PLOTTED), figsize=(4 * len(_PLOTTED), 3.2))
        for ax, key in zip(axes, _PLOTTED):
            for split, curves in sorted(self.history.items()):
                pts = [(e, v) for e, v in curves.get(key, []) if math.isfinite(v)]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=split)
            ax.set_title(key)
            ax.set_xlabel("epoch")
            values = [v for c in self.history.values() for _, v in c.get(key, []) if math.isfinite(v)]
            if key in ("nc1", "cdnv") and values and min(values) > 0:
                ax.set_yscale("log")
            if ax.has_data():
                ax.legend()
        fig.tight_layout()
        path = os.path.join(run_dir, self.filename)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="nc/curves", images=[path], step=trainer.global_step)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = state_dict.get("history", {})


def _segmentation(pl_module: LightningModule) -> bool:
    return getattr(pl_module, "task", "classification") == "segmentation"


def _broadcast_buffers(pl_module: LightningModule) -> None:
    """Give every rank rank 0's BN running statistics, as DDP does before each forward.

    Without it each rank would embed its shard with the statistics of its own last training
    step (the eval pass calls the module directly, bypassing DDP's buffer broadcast).
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in pl_module.buffers():
            torch.distributed.broadcast(buf.data, src=0)


def _shard(loader: Any, world: int, rank: int) -> tuple[Any, tuple[int, int] | None]:
    """Give each rank a disjoint, unpadded part of ``loader`` (stride ``rank::world``).

    Returns (loader, None) when already sharded or rebuilt, or (loader, (rank, world)) when the
    loader cannot be rebuilt and samples must be filtered by ``batch["index"]`` instead.
    """
    if world <= 1 or getattr(getattr(loader, "sampler", None), "num_replicas", None) == world:
        return loader, None
    rebuildable = isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)
    if rebuildable and loader.batch_size is not None:
        indices = list(range(rank, len(loader.dataset), world))
        rebuilt = DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=indices, collate_fn=loader.collate_fn,
            num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        )  # fmt: skip
        return rebuilt, None
    return loader, (rank, world)
