"""Heavy or optional dependencies, imported on first use with an install hint.

The one place that turns a missing package into an error saying what to install; every module
that needs open3d, h5py, spconv, torchsparse, ... calls `require` instead of importing at the top.
It imports nothing of the project, so every floor may use it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "HINTS"]

#: package -> how to get it (shown when the import fails)
HINTS = {
    "open3d": "pip install open3d (on Linux it also needs the system library libusb-1.0-0: "
    "apt-get install libusb-1.0-0)",
    "h5py": "pip install h5py",
    "spconv": "pip install spconv (CPU) or the CUDA wheel matching your torch, e.g. pip install spconv-cu126",
    "torchsparse": "torchsparse is not on PyPI: build it from https://github.com/mit-han-lab/torchsparse against "
    "the installed torch",
    "wandb": "pip install wandb",
    "matplotlib": "pip install matplotlib",
}


def require(module: str, why: str = "") -> ModuleType:
    """Import ``module`` (e.g. ``"open3d"``, ``"spconv.pytorch"``) or raise ImportError with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        hint = HINTS.get(top, f"pip install {top}")
        purpose = f" for {why}" if why else ""
        raise ImportError(f"{top} is needed{purpose}: {hint} ({err})") from err
