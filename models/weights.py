"""Get 2D weights (timm hub, local checkpoint, in-memory module) into a sparse 3D backbone, by name.

Transfer is strict, unlike the official code's `strict=False` matched by key order: every 2D key is
either used (inflated into the same-named 3D tensor) or dropped *by design* (the 2D classifier
`fc.*`, and the 2D stem when the 3D stem is `new`); an unknown key, a shape mismatch or a 3D
backbone tensor missing from the checkpoint raises, naming the keys (and both shapes), before the
model is touched. The report lists every key used, dropped and left fresh.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2p.inflate import InflateConfig, inflate_entry

__all__ = ["TransferReport", "WeightsUnavailable", "hub_weights_file", "read_checkpoint", "unwrap_state_dict",
           "load_2d_state_dict",
           "transfer_weights", "plan_transfer", "load_pretrained", "save_inflated", "META_KEY", "FORMAT_VERSION",
           "SOURCE_CLASSIFIER", "SLIM_KEY", "tensors_digest", "weights_from_checkpoint",
           "loading_from_checkpoint"]

log = logging.getLogger(__name__)

Source = bool | str | os.PathLike | nn.Module | Mapping[str, torch.Tensor]
META_KEY = "i2p_inflate"  # marks a checkpoint written by `save_inflated` / `i2p inflate` (already 3D)
FORMAT_VERSION = 1  # of those checkpoints
SOURCE_CLASSIFIER = "fc."  # timm's and torchvision's ResNet classifier
_WRAPPERS = ("state_dict", "model", "model_state", "model_state_dict", "net", "module")
_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile
#: a slim Lightning checkpoint's record: the omitted (frozen, copied) tensor names and their digest
SLIM_KEY = "i2p_slim"
_FROM_CHECKPOINT: ContextVar[bool] = ContextVar("i2p_weights_from_checkpoint", default=False)


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Models built inside skip loading their 2D source weights: a (full) checkpoint about to be loaded
    holds every tensor, so the source file or the hub is not needed.
    """
    token = _FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _FROM_CHECKPOINT.reset(token)


def loading_from_checkpoint() -> bool:
    """True inside ``weights_from_checkpoint()``."""
    return _FROM_CHECKPOINT.get()


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes, in name order): how a slim checkpoint
    recognises the frozen weights it was trained with.
    """
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass
class TransferReport:
    """Which checkpoint keys were used or dropped, and which model keys were left fresh."""

    source: str
    inflate: dict[str, str]
    already_3d: bool = False
    used: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        kind = "3D" if self.already_3d else "2D"
        return (f"{self.source}: {len(self.used)} {kind} tensors used, {len(self.dropped)} dropped by design "
                f"({_heads(self.dropped)}), {len(self.fresh)} 3D tensors left fresh ({_heads(self.fresh)}); "
                f"inflation {self.inflate}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def details(self) -> str:
        """Every key, one per line, grouped: used, dropped by design, left fresh."""
        parts = [str(self)]
        for title, keys in (("used", self.used), ("dropped", self.dropped), ("fresh (3D)", self.fresh)):
            parts.append(f"{title}: {len(keys)}")
            parts.extend(f"  {k}" for k in keys)
        return "\n".join(parts)


def _heads(keys: list[str]) -> str:
    """Module prefixes of keys, for a compact summary (`conv1, bn1, head`)."""
    seen: dict[str, None] = {}
    for k in keys:
        seen.setdefault(k.split(".")[0], None)
    return ", ".join(seen) or "none"


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, i2p metadata or None) from a loaded checkpoint object.

    Unwraps the usual containers (`state_dict`, `model`, ...) and strips a `module.` (DDP) or
    `_orig_mod.` (torch.compile) prefix shared by every key.
    """
    meta = None
    if isinstance(obj, Mapping) and META_KEY in obj:
        meta = dict(obj[META_KEY])
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
            raise ValueError(f"{where}: not a state dict (non-tensor entries {bad}) and none of the "
                             f"usual wrapper keys {_WRAPPERS} holds one")
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{where}: expected a non-empty state dict, got {type(obj).__name__}")
    state = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, meta


class WeightsUnavailable(ConnectionError):
    """The ImageNet weights of ``pretrained: true`` are neither cached nor downloadable (a node without
    internet): raised within seconds, with what to do, instead of the hub's minute of retries.
    """


def _reachable(url: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to ``url``'s host opens within ``timeout`` s, else why not."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "", port), timeout=timeout).close()
    except OSError as e:
        return f"{parsed.hostname}:{port} unreachable ({e})"
    return None


def hub_weights_file(name: str, timeout: float = 3.0) -> str | None:
    """The local file of timm's pretrained weights for ``name`` when cached (Hugging Face cache, or
    torch hub's for URL weights), None when they can be downloaded; else ``WeightsUnavailable``.

    A cached file is returned rather than letting timm ask the hub, which without a network retries
    for about a minute even when the file is in the cache. ``HF_HUB_OFFLINE=1`` means "cache only".
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights named {name!r}; see timm.list_pretrained()")
    if cfg.file:
        return str(cfg.file)
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return found
    if cfg.url:
        import torch.hub

        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url.split("?")[0]).name
        if cached.is_file():
            return str(cached)
    offline = bool(constants.HF_HUB_OFFLINE)
    hub_url = f"{constants.ENDPOINT}/{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or "")
    why = "HF_HUB_OFFLINE is set" if offline else _reachable(hub_url, timeout)
    if why is None:
        return None
    where = f"Hugging Face repo {cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
    raise WeightsUnavailable(
        f"pretrained: true needs timm's weights for {name!r} ({where}), which are not in the local cache "
        f"({constants.HF_HUB_CACHE}) and cannot be downloaded: {why}. Either pre-fetch them where there is "
        f"internet (python -c \"import timm; timm.create_model('{name}', pretrained=True)\"), then copy the cache "
        "to this machine or point HF_HOME at a shared folder and set HF_HUB_OFFLINE=1; or pass a local file "
        "(pretrained: /path/to/weights.pth or .safetensors); or train without them (pretrained: false). "
        "README, section Cluster."
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A local `.pth/.pt/.bin/.safetensors` file as (state dict, i2p metadata or None).

    Pickles load with `weights_only=True` (no code execution from untrusted files).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        obj: Any = load_file(str(path))
        if META_KEY in header:
            obj = {"state_dict": obj, META_KEY: json.loads(header[META_KEY])}
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    return unwrap_state_dict(obj, where=str(path))


def load_2d_state_dict(source: Source, name: str | None = None,
                       pretrained_cfg_overlay: dict[str, Any] | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """(state dict, i2p metadata or None, description) of `source`.

    `True` or `"timm:<name>"`: timm's pretrained weights for the model name, through
    `timm.create_model(..., pretrained=True)` (the hub cache; `pretrained_cfg_overlay=dict(file=...)`
    redirects it to a local file); a path: `read_checkpoint`; an `nn.Module` or a mapping: its tensors.
    """
    if isinstance(source, str) and source.startswith("timm:"):
        name, source = source[len("timm:"):], True
    if source is True:
        if not name:
            raise ValueError("pretrained=True needs the timm model name")
        import timm
        if not (pretrained_cfg_overlay or {}).get("file"):
            cached = hub_weights_file(name)  # a cached file loads without the network; none: fail fast
            if cached is not None:
                pretrained_cfg_overlay = {**(pretrained_cfg_overlay or {}), "file": cached}
        model_2d = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=pretrained_cfg_overlay)
        return dict(model_2d.state_dict()), None, f"timm:{name}"
    if isinstance(source, (str, os.PathLike)):
        state, meta = read_checkpoint(source)
        return state, meta, str(source)
    if isinstance(source, nn.Module):
        return dict(source.state_dict()), None, f"{type(source).__name__} instance"
    if isinstance(source, Mapping):
        state, meta = unwrap_state_dict(source, where="state dict")
        return state, meta, "state dict"
    raise TypeError(f"pretrained must be a bool, a path, 'timm:<name>', an nn.Module or a state dict, "
                    f"got {type(source).__name__}")


def plan_transfer(model: nn.Module, state: Mapping[str, torch.Tensor], cfg: InflateConfig, already_3d: bool,
          source: str) -> tuple[dict[str, str], list[str]]:
    """Dry run on meta tensors (no memory): {3D key: checkpoint key} and the dropped keys.

    Raises ValueError naming unknown keys, shape mismatches (both shapes) and missing 3D tensors.
    """
    fresh = tuple(model.fresh_prefixes())
    drop = fresh if already_3d else fresh + (SOURCE_CLASSIFIER,)
    target = model.state_dict()
    arch = getattr(model, "pretrained_cfg", {}).get("model_name", type(model).__name__)
    plan: dict[str, str] = {}
    dropped, unknown, mismatched = [], [], []
    for key, value in state.items():
        if key.startswith(drop):
            dropped.append(key)
            continue
        if already_3d:
            new_key, new_shape = key, tuple(value.shape)
        else:
            new_key, meta_val = inflate_entry(key, value.to("meta"), cfg)
            new_shape = tuple(meta_val.shape)
        if new_key not in target:
            unknown.append(key)
        elif new_shape != tuple(target[new_key].shape):
            as3d = "" if already_3d else f" (inflated: {new_shape})"
            mismatched.append(f"{key}: checkpoint shape {tuple(value.shape)}{as3d} vs model {new_key} "
                              f"shape {tuple(target[new_key].shape)}")
        else:
            plan[new_key] = key
    problems = []
    if mismatched:
        problems.append("shape mismatches:\n  " + "\n  ".join(mismatched))
    if unknown:
        problems.append(f"unknown keys (no such tensor in the 3D {arch}): {unknown[:20]}"
                        + (f" ... ({len(unknown)} in all)" if len(unknown) > 20 else ""))
    missing = [k for k in target if k not in plan and not k.startswith(fresh)]
    if missing:
        problems.append(f"3D {arch} tensors missing from the checkpoint: {missing[:20]}"
                        + (f" ... ({len(missing)} in all)" if len(missing) > 20 else ""))
    if problems:
        raise ValueError(f"cannot transfer {source} into {arch}: " + "\n".join(problems))
    return plan, dropped


def transfer_weights(model: nn.Module, state: Mapping[str, torch.Tensor], cfg: InflateConfig,
                     source: str = "checkpoint", already_3d: bool = False) -> TransferReport:
    """Inflate (unless `already_3d`) and copy `state` into `model` by name; all-or-nothing.

    Streams key by key, so the peak memory is the model plus one inflated kernel.
    """
    if getattr(model, "shortcut", cfg.shortcut) != cfg.shortcut:
        raise ValueError(f"inflation shortcut {cfg.shortcut!r} differs from the model's {model.shortcut!r}")
    plan, dropped = plan_transfer(model, state, cfg, already_3d, source)
    target = model.state_dict()
    with torch.no_grad():
        for new_key, key in plan.items():
            value = state[key] if already_3d else inflate_entry(key, state[key], cfg)[1]
            target[new_key].copy_(value)
    report = TransferReport(source=source, inflate=cfg.as_dict(), already_3d=already_3d,
                            used=list(plan.values()), dropped=dropped,
                            fresh=[k for k in target if k not in plan])
    log.info("weight transfer: %s", report)
    return report


def load_pretrained(model: nn.Module, pretrained: Source, inflate: InflateConfig | Mapping[str, str] | None = None,
                    name: str | None = None, pretrained_cfg_overlay: dict[str, Any] | None = None) -> TransferReport:
    """Resolve `pretrained` (see `load_2d_state_dict`) and transfer it into `model`.

    `inflate` defaults to the settings recorded in `model.pretrained_cfg["inflate"]` (or the
    defaults with the model's shortcut).

    A checkpoint written by `save_inflated` (`i2p inflate`) is already 3D: it loads as is, and its
    stored inflation settings must equal the requested ones (a silent axis or mode change would be
    a wrong model).
    """
    if inflate is None:  # the settings the model was built with, else the defaults with its shortcut
        recorded = getattr(model, "pretrained_cfg", {}).get("inflate")
        inflate = recorded or InflateConfig(shortcut=getattr(model, "shortcut", "repeat"))
    cfg = InflateConfig.coerce(inflate)
    state, meta, source = load_2d_state_dict(pretrained, name, pretrained_cfg_overlay)
    if meta is not None:
        version = meta.get("format", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"{source}: i2p 3D checkpoint format {version}, this version reads {FORMAT_VERSION}")
        stored = InflateConfig(meta["kernel_mode"], meta["depth_axis"], meta["shortcut"])
        if stored != cfg:
            raise ValueError(f"{source} was inflated with {stored.as_dict()}, but {cfg.as_dict()} was "
                             "requested; pass the stored inflate settings (kernel_mode, depth_axis, shortcut)")
    report = transfer_weights(model, state, cfg, source, already_3d=meta is not None)
    if hasattr(model, "pretrained_cfg"):
        model.pretrained_cfg["inflate"] = cfg.as_dict()
    return report


def save_inflated(model: nn.Module, path: str | os.PathLike, /, **info: Any) -> dict[str, Any]:
    """Write `model`'s transferred (non-fresh) tensors and the settings that made them, atomically.

    `.safetensors` keeps the settings in its header, `.pth/.pt` under `META_KEY`; `read_checkpoint`
    reads both back, and `load_pretrained` refuses other inflation settings. `info` adds to the
    settings (model name, stem, head, source, ...). Returns the settings written.
    """
    from i2p.io import atomic_path

    cfg = dict(model.pretrained_cfg.get("inflate") or InflateConfig().as_dict())
    meta = {**cfg, **info, "format": FORMAT_VERSION}
    fresh = tuple(model.fresh_prefixes())  # random by design (new stem, head): not worth storing
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith(fresh)}
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
        else:
            torch.save({"state_dict": state, META_KEY: meta}, tmp)
    return meta
