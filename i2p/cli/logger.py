"""Experiment logging defaults: W&B online when the user is logged in and the server answers, else offline.

A fresh machine without credentials must still train, log and keep a run that can be uploaded
later with ``wandb sync``; a logged-in user gets the usual online run. The decision
(``wandb_mode``), in order:

1. ``WANDB_MODE`` (``disabled``, ``offline``/``dryrun``, ``online``/``run``) or an explicit
   ``offline=`` argument: as asked.
2. No credentials (``WANDB_API_KEY``, ``wandb login``'s netrc entry for wandb's configured host,
   an identity token; read through wandb's own auth API, no network): offline.
3. Credentials, but the W&B host does not accept a connection within ``timeout`` seconds: offline,
   with a warning (today's wandb would retry for about two minutes, then crash).
4. Otherwise online; if ``wandb.init`` still fails online, the run falls back to offline.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger as _PLWandbLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

__all__ = ["WandbMode", "wandb_base_url", "wandb_has_credentials", "wandb_reachable", "wandb_mode",
           "wandb_offline_default", "WandbLogger"]

WandbMode = Literal["online", "offline", "disabled"]
_ENV_MODES: dict[str, WandbMode] = {"disabled": "disabled", "offline": "offline", "dryrun": "offline",
                                    "online": "online", "run": "online"}


def wandb_base_url() -> str:
    """The W&B server wandb itself would use (``WANDB_BASE_URL``, settings files, its default host)."""
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except Exception:  # noqa: BLE001 - an older or broken wandb: its long-standing default
        return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_has_credentials() -> bool:
    """True when wandb has credentials for its configured host (no network, no prompt)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk.lib import wbauth
    except ImportError:  # wandb < 0.2x: the API its own docs named then
        import wandb

        return bool(getattr(getattr(wandb, "api", None), "api_key", None))
    try:
        auth = wbauth.authenticate_session(host=wandb_base_url(), source="i2p", prompt=False, verify=False,
                                           update_session=False)
    except Exception as e:  # noqa: BLE001 - e.g. a malformed key: warn and treat as logged out
        rank_zero_warn(f"W&B credentials could not be read ({type(e).__name__}: {e}); logging offline")
        return False
    return auth is not None


def wandb_reachable(url: str | None = None, timeout: float = 3.0) -> bool:
    """Whether the W&B host (or the HTTPS proxy in the environment, which wandb would go through)
    accepts a TCP connection within ``timeout`` seconds.
    """
    url = url or wandb_base_url()
    proxy = urllib.request.getproxies().get(urlparse(url).scheme or "https")
    if proxy and not urllib.request.proxy_bypass(urlparse(url).hostname or ""):
        url = proxy if "://" in proxy else f"http://{proxy}"
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(
    offline: bool | None = None,
    env: Mapping[str, str] | None = None,
    has_credentials: Callable[[], bool] | None = None,
    reachable: Callable[[], bool] | None = None,
) -> tuple[WandbMode, str]:
    """(mode, reason) by the rules of the module docstring; the probes are injectable for tests."""
    env = os.environ if env is None else env
    has_credentials = has_credentials or wandb_has_credentials
    reachable = reachable or wandb_reachable
    forced = env.get("WANDB_MODE", "").strip().lower()
    if forced in _ENV_MODES:
        return _ENV_MODES[forced], f"WANDB_MODE={forced}"
    if forced:
        rank_zero_warn(f"WANDB_MODE={forced!r} is not one of {sorted(_ENV_MODES)}; deciding as if unset")
    if offline is not None:
        return ("offline" if offline else "online"), f"offline={offline}"
    if not has_credentials():
        return "offline", "no W&B credentials (wandb login or WANDB_API_KEY)"
    if not reachable():
        return "offline", f"W&B server {wandb_base_url()} unreachable"
    return "online", "logged in"


def wandb_offline_default() -> bool:
    """Offline (or disabled) unless ``wandb_mode`` decides online."""
    return wandb_mode()[0] != "online"


class WandbLogger(_PLWandbLogger):
    """Lightning's ``WandbLogger`` with project defaults and the mode of ``wandb_mode``.

    ``offline=None`` decides (module docstring). ``log_model=None`` uploads the best checkpoint as
    an artifact when online and not when offline, where W&B would stage a copy of every checkpoint
    under ``~/.local/share/wandb`` until ``wandb sync``; ``log_model=True`` forces that copy. Either
    way the run summary records the best and last checkpoint paths. ``id``: the W&B run to continue
    (``i2p fit --ckpt_path`` passes the one stored in the checkpoint). ``tags``, ``group`` and
    ``job_type`` go to ``wandb.init``; the CLI fills ``group`` with the experiment ``name`` and
    ``job_type`` with the subcommand (fit, validate, test) when unset, so the runs of one experiment
    are listed together.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = "runs",
        project: str = "i2p",
        offline: bool | None = None,
        log_model: Literal["all"] | bool | None = None,
        id: str | None = None,  # noqa: A002 - wandb's and Lightning's name for it
        tags: list[str] | None = None,
        group: str | None = None,
        job_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        mode, reason = wandb_mode(offline)
        self.mode, self.mode_reason = mode, reason
        if log_model is None:
            log_model = mode == "online"
        if mode != "online":
            kwargs["mode"] = mode  # explicit: wandb's settings singleton may predate a WANDB_MODE change
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        for key, value in (("tags", tags), ("group", group), ("job_type", job_type)):
            if value is not None:
                kwargs[key] = list(value) if key == "tags" else value
        super().__init__(name=name, save_dir=save_dir, project=project, offline=mode == "offline", log_model=False,
                         id=id, **kwargs)
        if mode != "online":
            self._wandb_init.pop("resume", None)  # offline runs cannot resume (wandb warns); the id is kept
        if self._wandb_init.get("anonymous") is None:  # Lightning passes None; wandb >= 0.19 warns about any value
            self._wandb_init.pop("anonymous", None)
        self._log_model = log_model

    @property
    def experiment(self) -> Any:
        """The W&B run; an online ``wandb.init`` that fails falls back to an offline run."""
        if self._experiment is None and self._offline and self._wandb_init.get("mode") == "offline":
            # wandb.init gets mode="offline" already; Lightning would also set WANDB_MODE=dryrun, a change of
            # the environment after wandb's setup that wandb reports as a warning on every run
            self._offline = False
            try:
                return super().experiment
            finally:
                self._offline = True
        if self._experiment is not None or self._offline or self.mode != "online":
            return super().experiment
        try:
            return super().experiment
        except Exception as e:  # noqa: BLE001 - any failure to reach the server: keep training, offline
            import wandb

            if wandb.run is not None:  # a half-made run of the failed init
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wandb.finish()
            rank_zero_warn(f"W&B online init failed ({type(e).__name__}: {e}); logging offline instead "
                           f"(upload later with `wandb sync`)")
            self._offline, self.mode, self.mode_reason = True, "offline", f"online init failed: {e}"
            self._wandb_init.pop("resume", None)
            self._wandb_init["mode"] = "offline"
            self._experiment = None
            return super().experiment

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
