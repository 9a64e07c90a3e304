"""Experiment logging defaults: W&B, offline unless the user has an API key.

A fresh machine without credentials must still train, log and keep a run that can be
uploaded later with ``wandb sync``; a logged-in user gets the usual online run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger
from pytorch_lightning.utilities import rank_zero_only

__all__ = ["wandb_has_credentials", "wandb_offline_default", "WandbLogger"]


def wandb_has_credentials() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``wandb login`` stored a key in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        path = os.environ.get("NETRC") or Path.home() / ".netrc"
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_offline_default() -> bool:
    """Offline when forced by ``WANDB_MODE`` or when no credentials are available."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    return not wandb_has_credentials()


class WandbLogger(_PLWandbLogger):
    """Lightning's ``WandbLogger`` with project defaults and automatic offline mode.

    ``offline=None`` decides from the credentials. ``log_model=None`` uploads the best
    checkpoint as an artifact when online and not when offline, where W&B would stage a copy
    of every checkpoint under ``~/.local/share/wandb`` until ``wandb sync``; ``log_model=True``
    forces that copy. Either way the run summary records the best and last checkpoint paths.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = "runs",
        project: str = "i2p",
        offline: bool | None = None,
        log_model: Literal["all"] | bool | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = wandb_offline_default()
        if log_model is None:
            log_model = not offline
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(name=name, save_dir=save_dir, project=project, offline=offline, log_model=False, **kwargs)
        self._log_model = log_model

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        summary = getattr(self.experiment, "summary", None)
        if summary is not None:
            summary["checkpoint/best"] = str(checkpoint_callback.best_model_path or "")
            summary["checkpoint/last"] = str(getattr(checkpoint_callback, "last_model_path", "") or "")

    @property
    def run_dir(self) -> str | None:
        """Local directory of the W&B run (what ``wandb sync`` takes)."""
        exp = self.experiment
        files_dir = getattr(exp, "dir", None)
        return str(Path(files_dir).parent) if files_dir else None
