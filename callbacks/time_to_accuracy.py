"""Time to accuracy: when the monitored metric first reaches each threshold (the paper's
"fewer epochs to 90 %" claim), as epoch, global step and wall seconds since fit start.

Wall time counts everything inside fit (validation, other callbacks) and continues across
resumes: the elapsed time is saved in the checkpoint and added to the new run's clock.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.trainer.states import TrainerFn

from callbacks.run_dir import run_directory
from i2p.io import atomic_path

__all__ = ["TimeToAccuracy"]


class TimeToAccuracy(Callback):
    """Record and log ``tta/<monitor>@<threshold>/{epoch,step,seconds}``; write ``filename`` (JSON).

    ``mode="min"`` for metrics that should go below the thresholds (losses). Monitors whose
    name starts with ``train`` are read at the end of the training epoch, others after validation.
    """

    def __init__(
        self,
        monitor: str = "val/acc",
        thresholds: Sequence[float] = (0.5, 0.7, 0.9),
        mode: str = "max",
        filename: str = "time_to_accuracy.json",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        self.monitor = monitor
        self.thresholds = tuple(float(t) for t in thresholds)
        self.mode = mode
        self.filename = filename
        self.reached: dict[str, dict[str, float]] = {}  # f"{threshold:g}" -> epoch/step/seconds/value
        self._offset = 0.0  # seconds elapsed in earlier runs (restored from a checkpoint)
        self._t0: float | None = None
        self._run_dir: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, thresholds=self.thresholds, mode=self.mode)

    def elapsed(self) -> float:
        """Seconds of fit so far, including runs before a resume."""
        return self._offset + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0 = time.monotonic()
        self._run_dir = run_directory(trainer)  # collective: all ranks call

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING  # a stand-alone validate() is no milestone
        if fitting and not trainer.sanity_checking and not self.monitor.startswith("train"):
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.monitor.startswith("train"):
            self._check(trainer)
        for thr, rec in self.reached.items():  # constants once reached: visible in every logger
            for field in ("epoch", "step", "seconds"):
                pl_module.log(f"tta/{self.monitor}@{thr}/{field}", float(rec[field]), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self._write()

    # ------------------------------------------------------------------ logic
    def _check(self, trainer: Trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        new = {}
        if value is not None:
            v = float(value)
            for t in self.thresholds:
                key = f"{t:g}"
                t_cmp = _in_precision_of(value, t)  # 7/10 as float32 (0.69999999) reaches a 0.7 threshold
                hit = v >= t_cmp if self.mode == "max" else v <= t_cmp
                if key not in self.reached and math.isfinite(v) and hit:
                    new[key] = {
                        "epoch": trainer.current_epoch, "step": trainer.global_step,
                        "seconds": round(self.elapsed(), 3), "value": v,
                    }  # fmt: skip
        # rank 0 decides (its clock, its metric), so all ranks log identical values
        new = trainer.strategy.broadcast(new, src=0)
        if new:
            self.reached.update(new)
            if trainer.is_global_zero:
                self._write()

    def _write(self) -> None:
        """Write the JSON atomically: a reader never sees half a file."""
        run_dir = self._run_dir or "."
        payload = {
            "monitor": self.monitor, "mode": self.mode, "elapsed_seconds": round(self.elapsed(), 3),
            "thresholds": {f"{t:g}": self.reached.get(f"{t:g}") for t in self.thresholds},
        }  # fmt: skip
        with atomic_path(os.path.join(run_dir, self.filename)) as tmp:
            tmp.write_text(json.dumps(payload, indent=2))

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"reached": self.reached, "elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reached = dict(state_dict.get("reached", {}))
        self._offset = float(state_dict.get("elapsed", 0.0))
        self._t0 = None  # restarted in on_fit_start; resume adds the saved elapsed time


def _in_precision_of(value: Any, threshold: float) -> float:
    """``threshold`` rounded to the precision of ``value`` (a float32 metric tensor compares with the
    float32 nearest the threshold, not with the float64 one it may fall just short of).
    """
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return float(torch.tensor(threshold, dtype=value.dtype))
    return float(threshold)
