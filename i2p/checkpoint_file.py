"""Torch checkpoint files, checked before they are read: one home for "open this checkpoint".

A truncated, empty or foreign file raises ``CheckpointError`` naming it and the newest readable
checkpoints beside it; pickles that are not plain data are refused (``weights_only``).
``peek_checkpoint`` opens one memory-mapped, so reading its small entries (hyper-parameters,
DataModule settings, the resume state) does not read its tensors. Free of Lightning: models,
callbacks and the app all open checkpoints through here.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "check_checkpoint", "readable_checkpoints", "load_checkpoint_file", "peek_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names it and the alternatives."""


def _problem(path: Path) -> str | None:
    """What is wrong with the file as a torch checkpoint, cheaply (zip directory, a pickle inside), or None."""
    if not path.is_file():
        return "checkpoint file not found"
    size = path.stat().st_size
    if size == 0:
        return "checkpoint file is empty (0 bytes; a write cut short?)"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"not a readable torch checkpoint ({size} bytes: truncated or corrupt, {e})"
    if not any(n.endswith("data.pkl") for n in names):
        return "not a torch checkpoint (no data.pkl inside the archive)"
    return None


def check_checkpoint(path: str | os.PathLike) -> None:
    """Cheap structural check of a torch checkpoint: catches empty and truncated files without reading the
    tensors. Raises ``CheckpointError`` naming the file and the readable checkpoints beside it.
    """
    problem = _problem(Path(path))
    if problem is not None:
        raise CheckpointError(_with_alternatives(Path(path), problem))


def readable_checkpoints(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """``*.ckpt`` files of ``folder`` that pass ``check_checkpoint``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    skip = Path(exclude).resolve() if exclude is not None else None
    good = [p for p in folder.glob("*.ckpt") if (skip is None or p.resolve() != skip) and _problem(p) is None]
    return sorted(good, key=lambda p: p.stat().st_mtime, reverse=True)


def _with_alternatives(path: Path, problem: str) -> str:
    others = readable_checkpoints(path.parent, exclude=path)
    hint = (f"; readable checkpoints beside it, newest first: {', '.join(str(p) for p in others[:3])}"
            if others else "; no readable checkpoint beside it")
    return f"{path}: {problem}{hint}"


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True,
                         mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` after ``check_checkpoint``, every failure a ``CheckpointError`` naming the file.

    With ``weights_only`` (the default) a pickle holding anything but tensors and plain data is
    refused before any of it runs.
    """
    check_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "GLOBAL" in ln.upper() and "unsupported" in ln.lower()),
                     "an object that is not plain data")
        raise CheckpointError(
            f"{path}: refused to unpickle it: it holds objects other than tensors and plain data, which could run "
            f"code (torch.load weights_only=True); load only checkpoints you trust as data ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        problem = f"cannot read the checkpoint (corrupt? {type(e).__name__}: {e})"
        raise CheckpointError(_with_alternatives(Path(path), problem)) from None


def peek_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's entries without reading its tensors (checked, memory-mapped, ``weights_only``)."""
    return load_checkpoint_file(path, mmap=True)
