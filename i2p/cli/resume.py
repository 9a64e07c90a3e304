"""Which checkpoint a command resumes from, and whether the command agrees with it.

- A run's name is ``name:`` or, without one, its run file: ``configs/experiments/modelnet40/io_resnet18.yaml``
  -> ``modelnet40/io_resnet18`` (another file: its stem). Checkpoints live in ``runs/<name>/checkpoints``,
  so ``--ckpt_path last`` finds the latest run of a config with or without ``name:``.
- ``--ckpt_path last`` with no such checkpoint is an error (naming the folder searched and the runs
  that exist) unless ``--allow_fresh true``, which starts the run from scratch: the one command a
  cluster script can repeat on every (re)start.
- A checkpoint is checked before use (empty/truncated files are named, with the readable ones
  beside it offered), and model settings given on the command line or in a config that contradict
  the checkpoint's architecture are an error naming both values. Other settings not given take the
  checkpoint's values (Lightning's behaviour); given ones win.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from i2p.checkpoint_file import check_checkpoint
from i2p.cli.configs import shipped

__all__ = ["CLIError", "ResumeError", "ARCHITECTURE_KEYS", "default_run_name", "find_last", "resolve_last",
           "model_overrides", "run_names"]

#: model settings that decide what the checkpoint's tensors mean: a contradiction is an error
ARCHITECTURE_KEYS = ("backbone", "in_channels", "stem", "head", "inflate", "regime")
#: hyper-parameters never merged from a checkpoint: the checkpoint holds the weights (no 2D source
#: needed) and the DataModule links the class table
_NOT_MERGED = ("pretrained", "num_classes", "class_names")


class CLIError(ValueError):
    """An error the ``i2p`` command prints as one line (no traceback)."""


class ResumeError(CLIError):
    """``--ckpt_path`` cannot be honoured as asked."""


def default_run_name(config_paths: Sequence[Any] | None) -> str | None:
    """The run name of a command without ``name:``: its (last) ``--config`` file, relative to the
    shipped ``configs/experiments`` without the suffix, else the file's stem; None without one.
    """
    paths = [Path(str(p)) for p in (config_paths or [])]
    if not paths:
        return None
    path = paths[-1].resolve()
    try:
        return path.relative_to(shipped("experiments").resolve()).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def find_last(folder: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` in ``folder`` (``last.ckpt``, or ``last-vN.ckpt`` of version counters)."""
    folder = Path(folder)
    found = [p for p in folder.glob("last*.ckpt") if re.fullmatch(r"last(-v\d+)?\.ckpt", p.name)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_names(root: str | Path) -> list[str]:
    """Names of the runs under ``root`` that have a ``last`` checkpoint (``<root>/<name>/checkpoints``)."""
    root = Path(root)
    names = []
    for ckpt_dir in root.glob("**/checkpoints"):
        if find_last(ckpt_dir) is not None:
            names.append(ckpt_dir.parent.relative_to(root).as_posix())
    return sorted(names)


def resolve_last(folder: str | Path, name: str | None, runs_root: str | Path, allow_fresh: bool) -> Path | None:
    """``--ckpt_path last`` -> the checkpoint to resume, None to start fresh (``allow_fresh``), or
    a ``ResumeError`` naming what was searched and the runs that exist.
    """
    last = find_last(folder)
    if last is not None:
        check_checkpoint(last)
        return last
    if allow_fresh:
        return None
    known = run_names(runs_root)
    close = difflib.get_close_matches(name or "", known, n=3) if name else []
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = f"runs with a last checkpoint under {runs_root}: {', '.join(known)}." if known else \
        f"no run under {runs_root} has a last checkpoint."
    raise ResumeError(f"--ckpt_path last: no checkpoint of run {name!r} in {Path(folder)}; {listing}{hint} "
                      "Pass --allow_fresh true to start this run from scratch when it has none.")


def _plain(value: Any) -> Any:
    """Comparable plain data: Namespaces, dataclasses and mappings as dicts, tuples as lists."""
    if hasattr(value, "as_dict") and callable(value.as_dict):
        value = value.as_dict()
    elif is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _given_flags(argv: Sequence[str]) -> set[str]:
    """Model settings named on the command line (``--model.init_args.K`` or ``--model.K``)."""
    keys = set()
    for arg in argv:
        m = re.match(r"--model\.(?:init_args\.)?([A-Za-z_]\w*)", arg)
        if m and m.group(1) not in ("class_path", "init_args"):
            keys.add(m.group(1))
    return keys


def model_overrides(model_cfg: Any, hparams: Mapping[str, Any], argv: Sequence[str], source: str
                    ) -> tuple[str | None, dict[str, Any]]:
    """Compare a parsed ``model`` config with a checkpoint's hyper-parameters.

    Returns (class path, the init args to take from the checkpoint): those the command did not
    give (neither a flag in ``argv`` nor a value different from the class default). Raises
    ``ResumeError`` when a given architecture setting (``ARCHITECTURE_KEYS``) or the class
    contradicts the checkpoint, naming both values.
    """
    hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
    ckpt_class = hparams.pop("_class_path", None)
    class_path = getattr(model_cfg, "class_path", None) if model_cfg is not None else None
    init = getattr(model_cfg, "init_args", None) if model_cfg is not None else None
    if ckpt_class and class_path and ckpt_class != class_path:
        raise ResumeError(f"{source} holds a {ckpt_class}, but this command builds a {class_path}: pass a checkpoint "
                          "of that model, or drop the model setting")
    class_path = class_path or ckpt_class
    defaults: dict[str, Any] = {}
    if class_path:
        module, _, name = class_path.rpartition(".")
        try:
            cls = getattr(import_module(module), name)
            defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                        if p.default is not inspect.Parameter.empty}
        except (ImportError, AttributeError, ValueError, TypeError):
            defaults = {}
    flags = _given_flags(argv)
    conflicts, take = [], {}
    for key, stored in hparams.items():
        if key in _NOT_MERGED or (defaults and key not in defaults):
            continue
        current = init.get(key) if init is not None else None
        given = key in flags or (init is not None and key in init and _plain(current) != _plain(defaults.get(key)))
        if not given:
            take[key] = stored
        elif key in ARCHITECTURE_KEYS and _plain(current) != _plain(stored):
            conflicts.append(f"{key}={_plain(current)!r} asked for, but the checkpoint has {key}={_plain(stored)!r}")
    if conflicts:
        raise ResumeError(f"{source} contradicts this command: " + "; ".join(conflicts)
                          + ". Drop the setting (the checkpoint's is used) or pass a checkpoint trained with it.")
    return class_path, take
