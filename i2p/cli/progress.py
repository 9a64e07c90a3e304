"""Progress for logs that are files (SLURM, nohup, ``| tee``): plain lines, no terminal control codes.

``PlainProgress`` prints one line every ``every_n_steps`` training steps and one summary line per
epoch (epoch, losses, accuracies, learning rate, samples/s), flushed at once so ``tail -f`` shows
them. The CLI picks it when stdout is not a terminal and Lightning's ``RichProgressBar`` when it is
(``choose_progress_bar``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar

__all__ = ["EPOCH_KEYS", "PlainProgress", "choose_progress_bar", "format_metrics"]

#: metrics of the per-epoch line, in order (those present)
EPOCH_KEYS = ("train/loss_epoch", "train/loss", "train/acc", "val/loss", "val/acc", "val/macc", "val/miou")


def format_metrics(metrics: Mapping[str, Any], keys: tuple[str, ...] = EPOCH_KEYS) -> str:
    """``key value`` pairs of the scalar metrics among ``keys`` (``train/loss_epoch`` shown as ``train/loss``)."""
    parts, seen = [], set()
    for key in keys:
        if key not in metrics:
            continue
        name = key.removesuffix("_epoch")
        if name in seen:
            continue
        seen.add(name)
        try:
            parts.append(f"{name} {float(metrics[key]):.4f}")
        except (TypeError, ValueError):
            continue
    return " ".join(parts)


def _batch_size(batch: Any) -> int:
    """Samples in a batch: ``index`` (one per sample, also for per-point labels), else the first tensor."""
    if isinstance(batch, Mapping):
        for key in ("index", "label"):
            value = batch.get(key)
            if hasattr(value, "__len__"):
                return len(value)
    if isinstance(batch, (list, tuple)) and batch and hasattr(batch[0], "__len__"):
        return len(batch[0])
    return 0


class PlainProgress(ProgressBar):
    """Plain-text progress: a line every ``every_n_steps`` steps (default: the trainer's
    ``log_every_n_steps``) and a summary line per epoch; evaluation runs get one line each.
    """

    def __init__(self, every_n_steps: int | None = None, stream: TextIO | None = None) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._stream = stream
        self._enabled = True
        self._epoch_start = self._fit_start = self._last_step = 0.0
        self._epoch_samples = self._fit_samples = 0
        self._lr_used = float("nan")

    # ------------------------------------------------------------------ ProgressBar API
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, file=self.stream, flush=True, **kwargs)

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def _line(self, text: str) -> None:
        if self._enabled and self.trainer.is_global_zero:
            print(text, file=self.stream, flush=True)

    def _epochs(self, trainer: pl.Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"{trainer.current_epoch + 1}/{total}"

    # ------------------------------------------------------------------ fit
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._fit_samples = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_step = time.perf_counter()
        self._epoch_samples = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._lr_used = self._lr(trainer)  # Lightning may step an epoch schedule before on_train_batch_end

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._last_step = time.perf_counter()
        n = _batch_size(batch) * trainer.world_size
        self._epoch_samples += n
        self._fit_samples += n
        every = self.every_n_steps or trainer.log_every_n_steps or 50
        if (batch_idx + 1) % every:
            return
        total = self.total_train_batches
        total = int(total) if total != float("inf") else "?"
        metrics = trainer.callback_metrics
        loss = metrics.get("train/loss_step", metrics.get("train/loss"))
        text = f"[train] epoch {self._epochs(trainer)} step {batch_idx + 1}/{total}"
        if loss is not None:
            text += f" loss {float(loss):.4f}"
        text += f" lr {self._lr_used:.3g} {self._rate(self._epoch_samples, self._epoch_start, self._last_step)}"
        self._line(text)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._epoch_start
        metrics = format_metrics(trainer.callback_metrics)
        rate = self._rate(self._epoch_samples, self._epoch_start, self._last_step)  # training steps only
        self._line(f"[epoch {self._epochs(trainer)}] {metrics} lr {self._lr_used:.3g} {rate} ({seconds:.1f} s)")

    # ------------------------------------------------------------------ evaluation
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._line(f"[validate] {format_metrics(trainer.callback_metrics)}")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        keys = tuple(k for k in trainer.callback_metrics if k.startswith("test/"))
        self._line(f"[test] {format_metrics(trainer.callback_metrics, keys)}")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _lr(trainer: pl.Trainer) -> float:
        opts = trainer.optimizers
        return float(opts[0].param_groups[0]["lr"]) if opts else float("nan")

    @staticmethod
    def _rate(samples: int, start: float, end: float) -> str:
        seconds = max(1e-9, end - start)
        return f"{samples / seconds:.1f} samples/s"


def choose_progress_bar(stream: TextIO | None = None) -> ProgressBar:
    """Lightning's ``RichProgressBar`` on a terminal, ``PlainProgress`` lines otherwise."""
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return RichProgressBar() if callable(isatty) and isatty() else PlainProgress()
