"""Faults injected into a real ``i2p fit`` subprocess (``--trainer.callbacks+=tests.helpers.faults.KillAt``):
SIGKILL at a chosen training step, inside validation, or in the middle of writing a checkpoint.

``KillAt`` fires only while ``I2P_FAULT`` is set in the environment and, under torchrun, only on the
first attempt (``TORCHELASTIC_RESTART_COUNT`` 0), so the resumed run goes through.
"""

from __future__ import annotations

import os
import signal
import time

import pytorch_lightning as pl
import torch

__all__ = ["KillAt", "SignalAt"]


def _armed() -> bool:
    return bool(os.environ.get("I2P_FAULT")) and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


class KillAt(pl.Callback):
    """SIGKILL this process when ``global_step == step``: ``where`` = ``"step"`` (before that training
    batch), ``"validation"`` (after the first validation batch of the next validation) or ``"save"``
    (half-way through the next checkpoint write). ``rank``: only this global rank dies.
    """

    def __init__(self, step: int, where: str = "step", rank: int = 0) -> None:
        if where not in ("step", "validation", "save"):
            raise ValueError(f"where must be step, validation or save, got {where!r}")
        self.step, self.where, self.rank = step, where, rank
        self._in_val = False

    def _mine(self, trainer: pl.Trainer) -> bool:
        return _armed() and trainer.global_rank == self.rank and trainer.global_step >= self.step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.where == "step" and self._mine(trainer):
            _die()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.where == "validation" and not trainer.sanity_checking and self._mine(trainer):
            _die()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.where != "save" or not self._mine(trainer):
            return
        real_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            size = os.path.getsize(f)
            with open(f, "r+b") as fh:  # cut the file to half, as a kill mid-write would leave it
                fh.truncate(size // 2)
            _die()

        torch.save = half_save


class SignalAt(pl.Callback):
    """Send ``signal`` (a name) to this process once, before training batch ``step`` (rank ``rank``)."""

    def __init__(self, step: int, signal: str = "SIGTERM", rank: int = 0) -> None:
        self.step, self.signal, self.rank, self._sent = step, signal, rank, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (_armed() and not self._sent and trainer.global_rank == self.rank and trainer.global_step >= self.step):
            self._sent = True
            os.kill(os.getpid(), getattr(signal, self.signal))
