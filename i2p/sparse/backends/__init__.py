"""Which library runs a conv's gather-GEMM-scatter: `i2p` (this engine), `spconv`, `torchsparse`.

The kernel maps — which input meets which output through which offset — are always the
engine's own (`i2p.sparse.kmap`), so every backend produces the same output coordinates and
the same values; a backend only executes the pairs it is given. Weights stay in the engine's
`[K, Cin, Cout]` layout (modules and checkpoints do not change with the backend) and are
converted at the call. Choice, most specific first:

1. `Conv3d.backend` (a module attribute; `set_backend(model, name)` sets it on every conv);
2. the engine-wide default, `set_default_backend(name)` or the environment variable
   `I2P_SPARSE_BACKEND` (read on first use);
3. `auto`: spconv, else torchsparse, on CUDA tensors when installed; the i2p engine otherwise
   (on CPU the i2p engine is the fastest and spconv's CPU path races beyond one thread), and for
   grouped convs, which neither library has (naming one of them explicitly for a grouped conv
   raises).

Optional libraries are imported only through `i2p.optional.require` (an install hint when missing).
"""
from __future__ import annotations

import os
from typing import Literal, Protocol, get_args

import torch

from ...optional import require

__all__ = ["BACKENDS", "BackendName", "Backend", "set_default_backend", "get_default_backend", "backend_available",
           "resolve_name", "resolve", "check_backend", "require_backend"]

BackendName = Literal["auto", "i2p", "spconv", "torchsparse"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
_IMPORT = {"spconv": "spconv.pytorch.ops", "torchsparse": "torchsparse.backend"}
_default: str | None = None
_available: dict[str, bool] = {}


class Backend(Protocol):
    name: str

    def matmul(self, feats: torch.Tensor, kernel: torch.Tensor, kmap, groups: int) -> torch.Tensor: ...

    def compute_dtype(self, autocast: torch.dtype, device: torch.device, kernel: torch.Tensor,
                      groups: int) -> torch.dtype:
        """The dtype it computes this conv in under autocast to `autocast` (the result is cast back)."""
        ...


def check_backend(name: str | None) -> str | None:
    """`name` validated (None passes: "the default"); ValueError naming the choices otherwise."""
    if name is None:
        return None
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (or None for the engine default), got {name!r}")
    return name.lower()


def backend_available(name: str) -> bool:
    """True when `name` can run here (i2p always; spconv / torchsparse when importable)."""
    name = check_backend(name)
    if name in ("i2p", "auto"):
        return True
    if name not in _available:
        try:
            require(_IMPORT[name])
            _available[name] = True
        except Exception:  # an installed but broken build (wrong CUDA, ABI) counts as absent
            _available[name] = False
    return _available[name]


def require_backend(name: str) -> None:
    """ImportError with the install hint unless library backend `name` imports."""
    if name in _IMPORT:
        require(_IMPORT[name], f"backend={name!r}")


def set_default_backend(name: str | None) -> None:
    """The engine-wide backend for convs whose `backend` is None (None: back to env / `auto`).

    Naming an optional library that is not installed raises ImportError with the install hint now,
    not at the first forward.
    """
    global _default
    name = check_backend(name)
    if name is not None:
        require_backend(name)
    _default = name


def get_default_backend() -> str:
    """`set_default_backend`'s value, else `$I2P_SPARSE_BACKEND`, else `auto`."""
    if _default is not None:
        return _default
    env = os.environ.get("I2P_SPARSE_BACKEND", "").strip()
    if env:
        try:
            return check_backend(env)
        except ValueError as err:
            raise ValueError(f"I2P_SPARSE_BACKEND: {err}") from None
    return "auto"


def resolve_name(name: str | None, device: torch.device, groups: int = 1) -> str:
    """The concrete backend (`i2p`, `spconv`, `torchsparse`) that runs a conv on `device`.

    `auto` keeps grouped convs (which neither library has) on the i2p engine.
    """
    name = check_backend(name) or get_default_backend()
    if name != "auto":
        return name
    if device.type == "cuda" and groups == 1:
        for lib in ("spconv", "torchsparse"):
            if backend_available(lib):
                return lib
    return "i2p"


class _I2P:
    name = "i2p"

    def compute_dtype(self, autocast, device, kernel, groups):
        from .i2p_backend import compute_dtype
        return compute_dtype(autocast, device, kernel, groups)

    def matmul(self, feats, kernel, kmap, groups):
        from .i2p_backend import i2p_matmul
        return i2p_matmul(feats, kernel, kmap, groups)


class _Spconv:
    name = "spconv"

    def compute_dtype(self, autocast, device, kernel, groups):
        # spconv 2.3 has no bfloat16 (and its CPU half path goes through numpy): float32 there
        return autocast if (device.type == "cuda" and autocast == torch.float16) else torch.float32

    def matmul(self, feats, kernel, kmap, groups):
        from .spconv_backend import spconv_matmul
        return spconv_matmul(feats, kernel, kmap, groups)


class _Torchsparse:
    name = "torchsparse"

    def compute_dtype(self, autocast, device, kernel, groups):
        # torchsparse's CPU ops are float32 only, its CUDA ops float32 / float16
        return autocast if (device.type == "cuda" and autocast == torch.float16) else torch.float32

    def matmul(self, feats, kernel, kmap, groups):
        from .torchsparse_backend import torchsparse_matmul
        return torchsparse_matmul(feats, kernel, kmap, groups)


_BY_NAME: dict[str, Backend] = {"i2p": _I2P(), "spconv": _Spconv(), "torchsparse": _Torchsparse()}


def resolve(name: str | None, device: torch.device, groups: int = 1) -> Backend:
    """The backend object for a conv on `device` (see `resolve_name`)."""
    return _BY_NAME[resolve_name(name, device, groups)]
