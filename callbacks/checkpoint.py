"""Checkpoint files that survive kills, and pre-emption that ends in a resumable checkpoint.

- ``AtomicCheckpointIO``: Lightning's ``CheckpointIO`` writing through ``i2p.io.atomic_path``
  (temporary file beside the target, fsync, rename), so a kill mid-write leaves the previous file
  intact even with ``TMPDIR`` on another filesystem (fsspec's transaction stages in ``TMPDIR`` and
  copies). Loading goes through ``i2p.checkpoint_file.load_checkpoint_file`` (names a truncated,
  empty or corrupt file and the readable ones beside it; refuses pickles that are not plain data).
- ``Checkpoint``: ``ModelCheckpoint`` whose ``last`` never refers to a removed file (superseded
  files are removed only after ``last`` is rewritten), which clears what a killed run left behind
  when the fit resumes, and which turns SIGTERM / SIGUSR1 into a checkpoint at the next point
  where Lightning itself checkpoints (after a training batch, after validation, at the end of an
  epoch), then an exit with status ``128 + signal`` (and ``scontrol requeue`` on SIGUSR1 under
  SLURM); every rank stops at the same step.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from i2p.checkpoint_file import load_checkpoint_file
from i2p.io import atomic_path, remove_stale_temp_files

__all__ = ["AtomicCheckpointIO", "Preempted", "Checkpoint", "PREEMPT_SIGNALS"]

#: the signals ``Checkpoint`` turns into "save, then exit 128 + signum"
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, then rename (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if "://" in str(path):  # a remote filesystem (fsspec): Lightning's transaction is its atomic write
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return load_checkpoint_file(path, map_location=map_location, weights_only=weights_only is not False)


class Preempted(SIGTERMException):
    """Raised on every rank after a pre-emption checkpoint; the exit status is ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with safe ``last`` files, clean-up after kills and pre-emption.

    Args (beyond ``ModelCheckpoint``'s):
        preempt_signals: signal names that save ``last`` at the next safe point and exit
            ``128 + signum`` (empty: leave the signals to Lightning).
        requeue: on SIGUSR1 under SLURM, ``scontrol requeue`` the job after saving (the job then
            restarts the same command, which resumes with ``--ckpt_path last``).
    """

    def __init__(self, *args: Any, preempt_signals: list[str] | tuple[str, ...] = PREEMPT_SIGNALS,
                 requeue: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bad = [s for s in preempt_signals if not hasattr(signal, s)]
        if bad:
            raise ValueError(f"preempt_signals: unknown signal names {bad}; e.g. {list(PREEMPT_SIGNALS)}")
        self.preempt_signals = tuple(preempt_signals)
        self.requeue = requeue
        self._pending: list[str] = []  # superseded files, removed once `last` no longer names them
        self._removals_from_checkpoint: list[str] = []
        self._signal: int | None = None
        self._step_save_due = False  # a step checkpoint that fell on an epoch's last batch
        self._last_step_of_last: int | None = None  # global step of the latest `last` written
        self._previous_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ removal only after `last`
    def _remove_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if self.save_last:
            self._pending.append(filepath)  # `last` may still name it: remove after `last` is rewritten
            return
        super()._remove_checkpoint(trainer, filepath)

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_step_of_last = trainer.global_step
        self._flush_removals(trainer)

    def _flush_removals(self, trainer: Trainer) -> None:
        pending, self._pending = self._pending, []
        keep = {self.last_model_path, self.best_model_path, *self.best_k_models}
        for path in dict.fromkeys(pending):
            if path not in keep:
                trainer.strategy.remove_checkpoint(path)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending_removal": list(self._pending)}

    @property
    def state_key(self) -> str:
        """``ModelCheckpoint``'s key, so checkpoints written with either class restore into both."""
        return ModelCheckpoint.state_key.fget(self).replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            self.current_score = state_dict.get("current_score", self.current_score)
        self._removals_from_checkpoint = list(state_dict.get("pending_removal", []))
        gone = [p for p in self.best_k_models if not Path(p).is_file()]
        if gone:  # the checkpoint names files that were removed since: forget them
            rank_zero_warn(f"checkpoint state names {len(gone)} file(s) that no longer exist ({', '.join(gone)}); "
                           "they are dropped from the best-k list")
            for p in gone:
                self.best_k_models.pop(p, None)
            if self.best_model_path in gone:
                self.best_model_path = max(self.best_k_models, key=self.best_k_models.get, default="")
                self.best_model_score = self.best_k_models.get(self.best_model_path)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.is_global_zero and self.dirpath:
            self._clean_after_kill(trainer)
        self._install_handlers(trainer)

    def _clean_after_kill(self, trainer: Trainer) -> None:
        """Remove what an interrupted run left in ``dirpath``: temporary files of cut writes, the files
        its ``last`` had superseded, and, when resuming from that ``last``, checkpoints it wrote after
        ``last`` (this run writes them again, under the same names).
        """
        folder = Path(self.dirpath)
        removed = [p.name for p in remove_stale_temp_files(folder)]
        for path in self._removals_from_checkpoint:
            if Path(path).is_file() and path not in self.best_k_models and path != self.best_model_path:
                Path(path).unlink()
                removed.append(Path(path).name)
        self._removals_from_checkpoint = []
        resumed = Path(trainer.ckpt_path) if trainer.ckpt_path else None
        if resumed is not None and resumed.parent.resolve() == folder.resolve() and resumed.name.startswith(
                self.CHECKPOINT_NAME_LAST or "last") and resumed.is_file():
            since = resumed.stat().st_mtime
            for p in folder.glob(f"*{self.FILE_EXTENSION}"):
                if p.resolve() != resumed.resolve() and p.stat().st_mtime > since and str(p) not in self.best_k_models:
                    p.unlink()
                    removed.append(p.name)
        if removed:
            rank_zero_info(f"[Checkpoint] removed {len(removed)} file(s) an interrupted run left in {folder}: "
                           f"{', '.join(sorted(removed))}")

    # ------------------------------------------------------------------ pre-emption
    def _install_handlers(self, trainer: Trainer) -> None:
        """Replace Lightning's SIGTERM handler (which stops mid-validation with exit status 0) and its
        SLURM SIGUSR1 handler (which saves mid-step) by one that only records the signal.
        Lightning's own teardown puts the original handlers back.
        """
        self._signal = None
        launcher = trainer.strategy.launcher

        def handler(signum: int, frame: Any) -> None:
            first = self._signal is None
            self._signal = signum
            if first and launcher is not None:
                with contextlib.suppress(Exception):
                    launcher.kill(signum)  # children Lightning started itself get the signal too

        for name in self.preempt_signals:
            signum = getattr(signal, name)
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave signals alone
                self._previous_handlers[signum] = signal.signal(signum, handler)

    def _preempt_requested(self, trainer: Trainer) -> int | None:
        """The signal to stop on, agreed by all ranks (collective under DDP), or None."""
        local = self._signal or 0
        if trainer.world_size > 1:
            value = trainer.strategy.reduce(torch.tensor(float(local), device=trainer.strategy.root_device),
                                            reduce_op="max")
            local = int(value.item())
        return local or None

    def _maybe_preempt(self, trainer: Trainer) -> None:
        if trainer.sanity_checking or not self.preempt_signals:
            return
        signum = self._preempt_requested(trainer)
        if signum is None:
            return
        name = signal.Signals(signum).name
        if self._last_step_of_last != trainer.global_step or not self.last_model_path:
            path = self.format_checkpoint_name(self._monitor_candidates(trainer), self.CHECKPOINT_NAME_LAST)
            self.last_model_path = path
            self._save_checkpoint(trainer, path)
            self._last_step_of_last = trainer.global_step
            self._flush_removals(trainer)
        rank_zero_info(f"[Checkpoint] {name}: saved {self.last_model_path} at epoch {trainer.current_epoch}, step "
                       f"{trainer.global_step}; resume with --ckpt_path last. Exiting with status {128 + signum}.")
        for logger in trainer.loggers:  # W&B shows the run as pre-empted (resumable), not failed
            mark = getattr(getattr(logger, "experiment", None), "mark_preempting", None)
            if trainer.is_global_zero and callable(mark):
                with contextlib.suppress(Exception):
                    mark()
        if signum == signal.SIGUSR1 and self.requeue and trainer.is_global_zero:
            _slurm_requeue()
        raise Preempted(signum)

    def _keep_last_current(self, trainer: Trainer) -> None:
        """Write ``last`` at this checkpoint point unless it is already of this step: Lightning 2.6 writes
        ``last`` only together with a top-k file, so a metric that stops improving would leave ``last``
        epochs behind (and a resume would replay them).
        """
        skip = bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
        if self.save_last and not skip and self._last_step_of_last != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = self._every_n_train_steps
        due = every >= 1 and trainer.global_step % every == 0
        if _last_batch_of_epoch(trainer):
            # Lightning cannot resume exactly from a checkpoint taken here (it would skip the validation the
            # epoch still owes): the step save moves to the epoch's end, after validation
            self._step_save_due = self._step_save_due or due
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if due:
            # Lightning defers step checkpoints until the monitored metric exists (the first validation):
            # keep `last` current anyway, so a kill in a long first epoch loses at most `every` steps
            self._keep_last_current(trainer)
        self._maybe_preempt(trainer)

    def _epoch_end_save(self, trainer: Trainer) -> None:
        if self._step_save_due and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        self._step_save_due = False
        self._keep_last_current(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if not self._should_save_on_train_epoch_end(trainer) and _last_batch_of_epoch(trainer):
            self._epoch_end_save(trainer)
        self._maybe_preempt(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._epoch_end_save(trainer)  # `last` at every epoch end, improved or not
        self._maybe_preempt(trainer)


def _last_batch_of_epoch(trainer: Trainer) -> bool:
    """Whether the batch that just ended is the epoch's last (a checkpoint there resumes into the next epoch
    without the validation the interrupted one still owed).
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return bool(progress.is_last_batch) or progress.current.ready >= trainer.num_training_batches


def _slurm_requeue() -> None:
    """``scontrol requeue`` this SLURM job (array task aware); a no-op outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job or not re.fullmatch(r"[0-9_]+", job):
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        rank_zero_warn(f"[Checkpoint] could not requeue SLURM job {job}: {e}")
        return
    if result.returncode == 0:
        rank_zero_info(f"[Checkpoint] requeued SLURM job {job}")
    else:
        rank_zero_warn(f"[Checkpoint] scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")
