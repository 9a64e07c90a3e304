"""The spconv backend: spconv's gather-GEMM-scatter ops over the engine's own kernel map.

`spconv.pytorch.ops.indice_conv` / `indice_conv_backward` take given pairs: `indice_pairs
[2, K', P]` int32 (inputs, outputs; -1 padding), `indice_pair_num [K']` and filters in spconv
2.x's KRSC layout `[Cout, K', Cin]`. They run with `subm=False` over the non-identity offsets
only; the centre GEMM of a submanifold map is done here (as spconv does it itself). The pair
tensors are built once per kernel map and device; the counts stay on the host (spconv reads
them there), so a cached layer causes no device-to-host copy. On CPU spconv's gather / scatter
share loop variables between OpenMP threads (a race; wrong sums beyond one thread), so CPU calls
run at one thread, and with spconv's `get_current_stream` answering 0 (its CPU backward asks
torch for a CUDA stream, which fails on a machine without a GPU). spconv has no grouped
convolution: groups > 1 raise.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ...optional import require
from ..kmap import KernelMap
from .i2p_backend import _identity_grads, _identity_out

__all__ = ["spconv_matmul", "SpconvPairs"]


@dataclass
class SpconvPairs:
    ks: torch.Tensor  # [K'] offsets (device)
    pairs: torch.Tensor  # [2, K', P] int32 (device)
    num: torch.Tensor  # [K'] int32 (host)


def _ops():
    return require("spconv.pytorch.ops", "backend='spconv'")


def spconv_pairs(kmap: KernelMap, device: torch.device) -> SpconvPairs:
    """Spconv's pair layout of `kmap`'s non-identity offsets (cached on the map)."""
    key = ("spconv", str(device))
    if key not in kmap.plans:
        ent = kmap.offset_pairs()
        m = max((e[1].numel() for e in ent), default=0)
        if max(kmap.n_in, kmap.n_out) >= 2 ** 31:
            raise ValueError("spconv indexes rows with int32: too many voxels for backend='spconv'")
        pairs = torch.full((2, len(ent), max(m, 1)), -1, dtype=torch.int32, device=device)
        for j, (_, i, o) in enumerate(ent):
            pairs[0, j, :i.numel()] = i.to(device=device, dtype=torch.int32)
            pairs[1, j, :o.numel()] = o.to(device=device, dtype=torch.int32)
        kmap.plans[key] = SpconvPairs(ks=torch.tensor([e[0] for e in ent], dtype=torch.int64, device=device),
                                      pairs=pairs, num=torch.tensor([e[1].numel() for e in ent], dtype=torch.int32))
    return kmap.plans[key]


@contextlib.contextmanager
def _cpu_safe(t: torch.Tensor) -> Iterator[None]:
    """On CPU: one thread, and no CUDA stream query (see the module docstring)."""
    if t.device.type != "cpu":
        yield
        return
    ops, n = _ops(), torch.get_num_threads()
    stream = ops.get_current_stream
    ops.get_current_stream = lambda: 0
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
        ops.get_current_stream = stream


class _SpconvConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int):
        feats, kernel = feats.contiguous(), kernel.contiguous()
        plan = spconv_pairs(kmap, feats.device)
        out = _identity_out(feats, kernel, kmap, groups).to(feats.dtype)
        ctx.kmap, ctx.plan = kmap, plan
        ctx.save_for_backward(feats, kernel)
        if plan.ks.numel():
            filt = kernel.index_select(0, plan.ks).permute(2, 0, 1).contiguous()  # [Cout, K', Cin]
            with _cpu_safe(feats):
                res = _ops().indice_conv(feats, filt, plan.pairs, plan.num, kmap.n_out, False, False)
            out = out + res
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, kernel = ctx.saved_tensors
        kmap, plan = ctx.kmap, ctx.plan
        go = grad_out.contiguous().to(feats.dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_w = _identity_grads(feats, kernel, go, kmap, 1, need_x, need_w)
        if plan.ks.numel():
            filt = kernel.index_select(0, plan.ks).permute(2, 0, 1).contiguous()
            with _cpu_safe(feats):
                din, dfilt = _ops().indice_conv_backward(feats, filt, go, plan.pairs, plan.num, False, False)
            if need_x:
                grad_x = grad_x + din.to(grad_x.dtype)
            if need_w:
                grad_w.index_add_(0, plan.ks, dfilt.reshape(filt.shape).permute(1, 2, 0).to(grad_w.dtype))
        return (None if grad_x is None else grad_x.to(feats.dtype)), grad_w, None, None


def spconv_matmul(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int = 1) -> torch.Tensor:
    """`kernel [K, Cin, Cout]` applied through `kmap` by spconv (differentiable)."""
    if groups != 1:
        raise NotImplementedError(f"backend='spconv' has no grouped convolution (groups={groups}); "
                                  "run this layer with backend='i2p'")
    return _SpconvConv.apply(feats, kernel, kmap, groups)
