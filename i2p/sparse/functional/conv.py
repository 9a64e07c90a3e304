"""Sparse 3D convolution: the kernel map, then the backend's gather-GEMM-scatter.

`conv3d` finds (or reuses) the kernel map of its level (`i2p.sparse.kmap`) and hands the
features, kernel and map to `sparse_matmul`, which picks the backend (`i2p.sparse.backends`:
the engine's own `i2p`, or spconv / torchsparse) — so the output coordinates never depend on
the backend.

Mixed precision: under `torch.autocast` the conv casts inputs and kernel once to the backend's
compute dtype and returns the autocast dtype; the backend itself runs with autocast off, so no
op inside it sees mixed dtypes.
"""
from __future__ import annotations

import torch

from ..backends import resolve
from ..kmap import KernelMap, build_kernel_map
from ..tensor import IntOr3, SparseTensor, to_triple

__all__ = ["conv3d", "sparse_matmul", "autocast_dtype", "PADDING_RULES"]

PADDING_RULES = ("floor", "padded")


def autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The autocast compute dtype active for `t`'s device, or None."""
    dev = t.device.type
    try:
        if torch.is_autocast_enabled(dev):
            return torch.get_autocast_dtype(dev)
    except RuntimeError:  # a device type autocast does not know
        pass
    return None


def sparse_matmul(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int = 1,
                  backend: str | None = None) -> torch.Tensor:
    """Apply `kernel [K, Cin/g, Cout]` through `kmap` (differentiable in feats and kernel).

    `backend`: `auto | i2p | spconv | torchsparse`, None for the engine default
    (`i2p.sparse.set_default_backend`). Under autocast both operands are cast once to the
    backend's compute dtype, the backend runs with autocast off, and the result is in the autocast dtype.
    """
    impl = resolve(backend, feats.device, groups)
    dt = autocast_dtype(feats)
    if dt is not None and feats.is_floating_point():
        cd = impl.compute_dtype(dt, feats.device, kernel, groups)
        with torch.autocast(feats.device.type, enabled=False):
            return impl.matmul(feats.to(cd), kernel.to(cd), kmap, groups).to(dt)
    return impl.matmul(feats, kernel, kmap, groups)


def conv3d(x: SparseTensor, kernel: torch.Tensor, bias: torch.Tensor | None = None,
           kernel_size: IntOr3 = 3, stride: IntOr3 = 1, dilation: IntOr3 = 1,
           transposed: bool = False, groups: int = 1, padding_rule: str = "floor",
           backend: str | None = None) -> SparseTensor:
    """Sparse convolution with torchsparse semantics (docs/engine.md, "Convolution").

    `kernel` is `[K, Cin/g, Cout]` (or `[Cin/g, Cout]` for K = 1). Stride 1: outputs at the
    input coordinates. Stride s: `padding_rule="floor"` puts the outputs at the unique
    `floor(c / (s·ts))·(s·ts)` (MinkowskiEngine, torchsparse 1.x, the official Image2Point code);
    `"padded"` at every multiple of `s·ts` whose window holds an input (spconv / torchsparse 2.x
    with padding `(k−1)//2`, on an unbounded grid); both coincide when k ≤ s. Output `o`
    gathers input `o + offset`. Transposed with stride s: outputs at the finer coordinates
    recorded by the matching strided conv, through that conv's map with in/out swapped.
    """
    ks = to_triple(kernel_size, "kernel_size")
    st = to_triple(stride, "stride")
    dl = to_triple(dilation, "dilation")
    if padding_rule not in PADDING_RULES:
        raise ValueError(f"padding_rule must be one of {PADDING_RULES}, got {padding_rule!r}")
    kvol = ks[0] * ks[1] * ks[2]
    w = kernel if kernel.dim() == 3 else kernel.unsqueeze(0)
    if w.shape[0] != kvol:
        raise ValueError(f"kernel has {w.shape[0]} offsets but kernel_size {ks} needs {kvol}")
    if w.shape[1] * groups != x.feats.shape[1]:
        raise ValueError(f"kernel expects {w.shape[1] * groups} input channels, x has {x.feats.shape[1]}")
    cache = x.cache
    cache.coords.setdefault(x.stride, x.coords)
    if not transposed:
        kmap, out_coords, out_stride = build_kernel_map(cache, x.stride, ks, st, dl, padding_rule)
    else:
        if any(x.stride[i] % st[i] for i in range(3)):
            raise ValueError(f"transposed conv stride {st} does not divide tensor stride {x.stride}")
        fine = tuple(x.stride[i] // st[i] for i in range(3))
        if fine not in cache.coords:
            raise ValueError(f"no coordinates cached at stride {fine}: a transposed conv needs the "
                             "matching strided conv (or pooling) earlier on the same batch")
        down, _, _ = build_kernel_map(cache, fine, ks, st, dl, None)  # the level as it was made
        kmap, out_coords, out_stride = down.transposed(), cache.coords[fine], fine
    out = sparse_matmul(x.feats, w, kmap, groups, backend)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return SparseTensor._derive(out, out_coords, out_stride, cache)
