"""BatchNorm over sparse features, and a synchronised version that works on CPU (gloo) and GPU.

Design: `BatchNorm` *is* an `nn.BatchNorm1d` (state-dict keys `weight`, `bias`, `running_mean`,
`running_var`, `num_batches_tracked`, flat like timm's, so inflation maps names 1:1) whose
forward also accepts a SparseTensor. `torch.nn.SyncBatchNorm.convert_sync_batchnorm` (what
Lightning's stock `sync_batchnorm=True` calls) would replace it with a plain `nn.SyncBatchNorm`,
which neither accepts a SparseTensor nor runs on CPU tensors under DDP (it raises "expected input
tensor to be on GPU"). So the engine provides its own `SyncBatchNorm` (a subclass of `BatchNorm`,
same keys) that all-reduces the batch statistics with `torch.distributed` on any backend, and
`convert_sync_batchnorm` / `revert_sync_batchnorm` to swap every `_BatchNorm` in a model for it
(a Lightning `LayerSync` plugin calling these belongs in the Lightning-side packages).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .activation import apply_to_feats


class BatchNorm(nn.BatchNorm1d):
    """`nn.BatchNorm1d` over a SparseTensor's features `[N, C]` (plain tensors accepted too)."""

    def forward(self, x: Any) -> Any:
        return apply_to_feats(super().forward, x)


class _AllReduceSum(torch.autograd.Function):
    """Sum across ranks; the gradient of a sum seen by every rank is the sum of their gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def _all_reduce_sum(t: torch.Tensor, group: Any) -> torch.Tensor:
    return _AllReduceSum.apply(t, group)


class SyncBatchNorm(BatchNorm):
    """BatchNorm whose training statistics are computed over all ranks' samples.

    Statistics use two all-reduces (count and sum, then the centred sum of squares) rather than
    E[x²] − E[x]², which cancels catastrophically. Outside training, or without an initialised
    process group of more than one rank, it is exactly `BatchNorm`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group: Any = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _sync_forward(self, f: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(f)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        c = f.shape[1]
        dims = [0] + list(range(2, f.dim()))
        shape = [1, c] + [1] * (f.dim() - 2)
        stat_dtype = torch.float64 if f.dtype == torch.float64 else torch.float32
        fs = f.to(stat_dtype)
        count = torch.tensor([f.numel() // c], dtype=stat_dtype, device=f.device)
        s = _all_reduce_sum(torch.cat([fs.sum(dims), count]), group)
        n = s[c]
        mean = s[:c] / n.clamp(min=1)
        centred = fs - mean.view(shape)
        var = _all_reduce_sum((centred * centred).sum(dims), group) / n.clamp(min=1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(f.dtype)

    def forward(self, x: Any) -> Any:
        need_sync = (self.training and dist.is_available() and dist.is_initialized()
                     and dist.get_world_size(self.process_group) > 1)
        if not need_sync:
            return super().forward(x)
        return apply_to_feats(self._sync_forward, x)

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm, process_group: Any = None) -> SyncBatchNorm:
        """A SyncBatchNorm sharing `bn`'s parameters and buffers."""
        out = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group)
        _share_state(bn, out)
        return out


def _share_state(src: _BatchNorm, dst: _BatchNorm) -> None:
    if src.affine:
        dst.weight, dst.bias = src.weight, src.bias
    dst.running_mean, dst.running_var = src.running_mean, src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.training = src.training


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Replace every BatchNorm (ours, `nn.BatchNorm*d`, `nn.SyncBatchNorm`) by `i2p.sparse.SyncBatchNorm`.

    Parameters and buffers are shared, not copied; returns the (possibly new) root module.
    """
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm.from_batchnorm(module, process_group)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Inverse of `convert_sync_batchnorm`: every `SyncBatchNorm` back to `BatchNorm`."""
    out = module
    if isinstance(module, SyncBatchNorm):
        out = BatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        _share_state(module, out)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out
