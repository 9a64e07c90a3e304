"""What a checkpoint needs beyond Lightning's own state for a resume to continue the same run.

Lightning restores the model, optimizer, scheduler, loop progress, callbacks and (through
``datamodules.sampling.ResumableLoader``) the position in the training data. ``ResumeState`` adds:

- the global random state (torch, CUDA, numpy, ``random``) at the checkpoint, restored when
  training restarts, for anything that draws from it during training (dropout). The data side
  never does: its generators are functions of ``(seed, epoch, index)``. Rank 0's state is stored
  and restored on every rank; ranks seeded alike by ``seed_everything`` draw alike.
- the training horizon (``max_epochs``, ``max_steps``): when a fit resumes with another one (a
  finished run extended from 1 to 3 epochs), each learning-rate schedule is rebuilt for the new
  length: ``configure_optimizers`` builds it afresh, it is replayed up to the checkpoint's step,
  and its state and learning rates replace the restored ones. Without this a cosine schedule that
  ended at lr 0 would train the added epochs at lr 0.
- the W&B run id (``checkpoint["i2p_run"]["wandb_id"]``), which ``i2p fit --ckpt_path`` reads to
  continue the same W&B run.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["RUN_KEY", "RESUME_KEY", "get_rng_state", "set_rng_state", "rebuild_schedules", "ResumeState"]

RUN_KEY = "i2p_run"  # {"wandb_id", "wandb_project", "wandb_group"}; the CLI adds the experiment "name"
RESUME_KEY = "i2p_resume"  # {"rng": ..., "max_epochs": ..., "max_steps": ...}


def get_rng_state() -> dict[str, Any]:
    """The global random state as plain data and tensors (loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``get_rng_state``."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rebuild_schedules(trainer: Trainer, pl_module: LightningModule) -> int:
    """Rebuild every LR scheduler of ``trainer`` for the trainer's current horizon (see the module
    docstring); returns how many were rebuilt. Works on any torch scheduler: the fresh one is
    stepped as often as the restored one had been, so its horizon (``T_max``, ``total_iters``, a
    lambda's ``max_epochs``) is the new one and its position the old one.
    """
    from pytorch_lightning.core.optimizer import _init_optimizers_and_lr_schedulers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping a fresh scheduler before its optimizer is the point here
        _, fresh_configs = _init_optimizers_and_lr_schedulers(pl_module)
        done = 0
        for live_cfg, fresh_cfg in zip(trainer.lr_scheduler_configs, fresh_configs):
            live, fresh = live_cfg.scheduler, fresh_cfg.scheduler
            if not hasattr(live, "last_epoch") or not hasattr(fresh, "last_epoch"):
                continue  # e.g. ReduceLROnPlateau: no horizon to rebuild
            for _ in range(int(live.last_epoch) - int(fresh.last_epoch)):
                fresh.step()
            live.load_state_dict(fresh.state_dict())
            for live_group, fresh_group in zip(live.optimizer.param_groups, fresh.optimizer.param_groups):
                live_group.update({k: v for k, v in fresh_group.items() if k != "params"})
            done += 1
    return done


class ResumeState(Callback):
    """Stores and restores the random state, the training horizon and the W&B run id (module docstring)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RESUME_KEY] = {"rng": get_rng_state(), "max_epochs": trainer.max_epochs,
                                  "max_steps": trainer.max_steps}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                group = getattr(logger, "_wandb_init", {}).get("group")
                run = {"wandb_id": str(logger.version), "wandb_project": str(logger.name)}
                if isinstance(group, str):
                    run["wandb_group"] = group
                checkpoint.setdefault(RUN_KEY, {}).update(run)
                break

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._loaded = checkpoint.get(RESUME_KEY)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loaded, self._loaded = self._loaded, None
        if not loaded:
            return
        before = (loaded.get("max_epochs"), loaded.get("max_steps"))
        now = (trainer.max_epochs, trainer.max_steps)
        if before != now and trainer.lr_scheduler_configs:
            n = rebuild_schedules(trainer, pl_module)
            rank_zero_info(f"[ResumeState] horizon changed since the checkpoint (max_epochs, max_steps: {before} -> "
                           f"{now}): {n} learning-rate schedule(s) rebuilt for the new length")
        set_rng_state(loaded["rng"])
