"""Experiment logging defaults: W&B, offline unless the user has an API key.

A fresh machine without credentials must still train, log and keep a run that can be
uploaded later with ``wandb sync``; a logged-in user gets the usual online run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal

from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger


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

    ``offline=None`` decides from the credentials. Unlike Lightning's logger, ``log_model``
    is allowed offline: the checkpoint artifact is stored in the local run and uploaded by
    ``wandb sync`` together with the metrics.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = "runs",
        project: str = "i2p",
        offline: bool | None = None,
        log_model: Literal["all"] | bool = True,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = wandb_offline_default()
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(name=name, save_dir=save_dir, project=project, offline=offline, log_model=False, **kwargs)
        self._log_model = log_model

    @property
    def run_dir(self) -> str | None:
        """Local directory of the W&B run (what ``wandb sync`` takes)."""
        exp = self.experiment
        files_dir = getattr(exp, "dir", None)
        return str(Path(files_dir).parent) if files_dir else None
