"""Sparse max pooling (over existing neighbours only) and per-sample global pooling.

All of it is deterministic on every device (no atomic scatter whose order varies); under
autocast max pooling keeps the input dtype (a max is exact) and average pooling sums in float32
and returns float32, as torch's autocast does for `avg_pool3d`.
"""
from __future__ import annotations

import torch
from torch import nn

from .kmap import build_kernel_map
from .ops import scatter_sum
from .tensor import IntOr3, SparseTensor, to_triple

__all__ = ["max_pool3d", "MaxPool3d", "global_avg_pool", "global_max_pool"]


class _SparseMaxFunction(torch.autograd.Function):
    """Running max over kernel offsets; remembers the arg-max row so backward is one scatter."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, kmap) -> torch.Tensor:
        n_out, c = kmap.n_out, feats.shape[1]
        out = feats.new_full((n_out, c), float("-inf"))
        arg = torch.full((n_out, c), -1, dtype=torch.int64, device=feats.device)
        for in_idx, out_idx in _pairs(kmap, feats.device):
            cand = feats.index_select(0, in_idx)
            cur = out.index_select(0, out_idx)
            better = cand > cur
            out.index_copy_(0, out_idx, torch.where(better, cand, cur))
            arg.index_copy_(0, out_idx, torch.where(better, in_idx[:, None].expand_as(cand),
                                                    arg.index_select(0, out_idx)))
        empty = arg < 0
        out = out.masked_fill(empty, 0)
        ctx.save_for_backward(arg)
        ctx.kmap, ctx.n_in = kmap, feats.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        """Scatter offset by offset: deterministic without atomics.

        Within one offset every input row occurs once, so no row is added to twice by one scatter.
        """
        (arg,) = ctx.saved_tensors
        grad = grad_out.new_zeros(ctx.n_in, grad_out.shape[1])
        for in_idx, out_idx in _pairs(ctx.kmap, grad_out.device):
            won = arg.index_select(0, out_idx) == in_idx[:, None]
            grad.index_add_(0, in_idx, grad_out.index_select(0, out_idx) * won)
        return grad, None


def _pairs(kmap, device):
    for p in kmap.pairs:
        if p is None:
            idx = torch.arange(kmap.n_out, device=device)
            yield idx, idx
        elif p[0].numel():
            yield p


def max_pool3d(x: SparseTensor, kernel_size: IntOr3 = 3, stride: IntOr3 = 1, dilation: IntOr3 = 1,
               padding_rule: str = "floor") -> SparseTensor:
    """Max over the existing inputs of each output's window; coordinates exactly as `conv3d`.

    An output with no input in its window (possible only when the window does not cover the
    stride cell, e.g. kernel 1 with stride 2) gets zeros. Shares the conv's kernel map.
    """
    ks, st, dl = to_triple(kernel_size, "kernel_size"), to_triple(stride, "stride"), to_triple(dilation, "dilation")
    x.cache.coords.setdefault(x.stride, x.coords)
    kmap, out_coords, out_stride = build_kernel_map(x.cache, x.stride, ks, st, dl, padding_rule)
    out = _SparseMaxFunction.apply(x.feats, kmap)
    return SparseTensor._derive(out, out_coords, out_stride, x.cache)


class MaxPool3d(nn.Module):
    """Sparse max pooling module (kernel_size, stride, dilation as `Conv3d`)."""

    def __init__(self, kernel_size: IntOr3 = 3, stride: IntOr3 = 1, dilation: IntOr3 = 1) -> None:
        super().__init__()
        self.kernel_size = to_triple(kernel_size, "kernel_size")
        self.stride = to_triple(stride, "stride")
        self.dilation = to_triple(dilation, "dilation")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"

    def forward(self, x: SparseTensor) -> SparseTensor:
        return max_pool3d(x, self.kernel_size, self.stride, self.dilation)


def _batch_index(x: SparseTensor) -> torch.Tensor:
    return x.coords[:, 0].long()


def global_avg_pool(x: SparseTensor) -> torch.Tensor:
    """Mean of each sample's voxel features → `[B, C]` (B = max batch index + 1).

    Half / bfloat16 features are summed in float32 and the result is float32.
    """
    b = _batch_index(x)
    n = x.batch_size
    f = x.feats.float() if x.feats.dtype in (torch.float16, torch.bfloat16) else x.feats
    sums = scatter_sum(f, b, n)
    counts = torch.bincount(b, minlength=n).clamp(min=1).to(f.dtype)
    return sums / counts[:, None]


def global_max_pool(x: SparseTensor) -> torch.Tensor:
    """Max of each sample's voxel features → `[B, C]` (an empty sample gives zeros)."""
    b = _batch_index(x)
    n = x.batch_size
    out = x.feats.new_zeros(n, x.feats.shape[1])
    index = b[:, None].expand_as(x.feats)
    return out.scatter_reduce(0, index, x.feats, reduce="amax", include_self=False)
