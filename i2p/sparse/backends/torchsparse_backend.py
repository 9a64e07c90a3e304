"""The torchsparse backend: torchsparse 2.x's gather-scatter ops over the engine's kernel map.

`torchsparse.backend.conv_{forward,backward}_gather_scatter_{cuda,cpu}` take given pairs:
`nbmaps [P, 2]` int32 `(input, output)` concatenated offset after offset, `nbsizes [K]` int32 on
the host, and the kernel in the engine's own layout `[K, Cin, Cout]`. Both treat the middle
offset of an odd kernel volume as an identity GEMM whenever the input and output row counts
are equal — wrong for the non-identity offsets handed over here (and for a strided map that
happens to keep the row count) — so the offsets passed are always an even number (a zero-count
offset with a zero weight pads an odd one). The centre GEMM of a submanifold map is done here.
The forward runs torchsparse's plain per-offset path (`conv_mode=0`: no adaptive grouping, no
global buffer). Pair tensors are built once per kernel map and device. No grouped convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...optional import require
from ..kmap import KernelMap
from .i2p_backend import _identity_grads, _identity_out

__all__ = ["torchsparse_matmul", "TorchsparsePairs"]


@dataclass
class TorchsparsePairs:
    ks: torch.Tensor  # [K'] offsets of the real entries (device)
    nbmaps: torch.Tensor  # [P, 2] int32 (device)
    nbsizes: torch.Tensor  # [K' or K' + 1] int32 (host): even length
    n_real: int


def _backend():
    tsb = require("torchsparse.backend", "backend='torchsparse'")
    if not hasattr(tsb, "conv_forward_gather_scatter_cpu"):
        import torchsparse
        raise ImportError(f"torchsparse {getattr(torchsparse, '__version__', '?')} lacks the 2.x gather-scatter "
                          "ops (conv_forward_gather_scatter_*) that backend='torchsparse' calls: install "
                          "torchsparse 2.1")
    return tsb


def torchsparse_pairs(kmap: KernelMap, device: torch.device) -> TorchsparsePairs:
    key = ("torchsparse", str(device))
    if key not in kmap.plans:
        ent = kmap.offset_pairs()
        sizes = [e[1].numel() for e in ent]
        if len(ent) % 2:
            sizes.append(0)
        maps = [torch.stack([i, o], 1) for _, i, o in ent]
        nbmaps = (torch.cat(maps) if maps else torch.zeros(0, 2, dtype=torch.int64)).to(device=device,
                                                                                        dtype=torch.int32)
        kmap.plans[key] = TorchsparsePairs(
            ks=torch.tensor([e[0] for e in ent], dtype=torch.int64, device=device), nbmaps=nbmaps.contiguous(),
            nbsizes=torch.tensor(sizes, dtype=torch.int32), n_real=len(ent))
    return kmap.plans[key]


def _weights(kernel: torch.Tensor, plan: TorchsparsePairs) -> torch.Tensor:
    w = kernel.index_select(0, plan.ks)
    if plan.nbsizes.numel() > plan.n_real:
        w = torch.cat([w, w.new_zeros(1, *w.shape[1:])])
    return w.contiguous()


class _TorchsparseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int):
        feats, kernel = feats.contiguous(), kernel.contiguous()
        plan = torchsparse_pairs(kmap, feats.device)
        ctx.kmap, ctx.plan = kmap, plan
        ctx.save_for_backward(feats, kernel)
        out = _identity_out(feats, kernel, kmap, groups).to(feats.dtype)
        if plan.n_real:
            tsb, w = _backend(), _weights(kernel, plan)
            if feats.is_cuda:
                empty = feats.new_empty(0)
                none = torch.zeros(0, dtype=torch.int32, device=feats.device)
                res = tsb.conv_forward_gather_scatter_cuda(feats, w, plan.nbmaps, plan.nbsizes, none, none,
                                                           kmap.n_out, 0.0, 0, 0, False, empty)
            else:
                res = feats.new_zeros(kmap.n_out, kernel.shape[2])
                tsb.conv_forward_gather_scatter_cpu(feats, res, w, plan.nbmaps, plan.nbsizes, False)
            out = out + res.to(out.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, kernel = ctx.saved_tensors
        kmap, plan = ctx.kmap, ctx.plan
        go = grad_out.contiguous().to(feats.dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_w = _identity_grads(feats, kernel, go, kmap, 1, need_x, need_w)
        if plan.n_real:
            tsb, w = _backend(), _weights(kernel, plan)
            gx, gw = torch.zeros_like(feats), torch.zeros_like(w)
            fn = tsb.conv_backward_gather_scatter_cuda if feats.is_cuda else tsb.conv_backward_gather_scatter_cpu
            fn(feats, gx, go, w, gw, plan.nbmaps, plan.nbsizes, False)
            if need_x:
                grad_x = grad_x + gx.to(grad_x.dtype)
            if need_w:
                grad_w.index_add_(0, plan.ks, gw[:plan.n_real].to(grad_w.dtype))
        return (None if grad_x is None else grad_x.to(feats.dtype)), grad_w, None, None


def torchsparse_matmul(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int = 1) -> torch.Tensor:
    """`kernel [K, Cin, Cout]` applied through `kmap` by torchsparse (differentiable)."""
    if groups != 1:
        raise NotImplementedError(f"backend='torchsparse' has no grouped convolution (groups={groups}); "
                                  "run this layer with backend='i2p'")
    return _TorchsparseConv.apply(feats, kernel, kmap, groups)
