"""Where the shipped configs are: the ``configs`` package's data, in a checkout and in a wheel alike."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["shipped", "find_config", "DEFAULTS"]


def shipped(name: str = "") -> Path:
    """Path of a shipped config (``experiments/demo.yaml``) or of the folder itself."""
    return Path(str(files("configs"))) / name


#: the project's defaults for every Lightning subcommand (checkpoints, logger, seed)
DEFAULTS = shipped("defaults.yaml")


def find_config(name: str) -> Path:
    """A config path as given, else a shipped one (``configs/experiments/<name>``, then ``configs/<name>``)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (shipped("experiments") / name, shipped(name)):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config {name!r} not found (looked in ., {shipped('experiments')} and {shipped()})")
