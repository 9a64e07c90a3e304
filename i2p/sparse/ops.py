"""Feature-level operations on tensors sharing coordinates, and the engine's deterministic scatter.

`cat` (UNet skip concatenation) and `add` (residuals) need identical coordinates.

Under autocast `add` / `cat` follow torch's type promotion (a bfloat16 branch plus a float32
branch gives float32), so mixing precisions never raises and never silently loses bits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .tensor import SparseTensor

__all__ = ["cat", "add", "scatter_sum"]


def _same_coords(a: SparseTensor, b: SparseTensor) -> bool:
    if a.coords is b.coords:
        return True
    return (a.stride == b.stride and a.coords.shape == b.coords.shape
            and bool(torch.equal(a.coords, b.coords)))


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate the features of tensors with identical coordinates (channel axis)."""
    if len(tensors) == 0:
        raise ValueError("tensors is empty")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if not _same_coords(first, t):
            raise ValueError(f"tensors[{i}] has different coords or stride than tensors[0]")
    return first.replace(torch.cat([t.feats for t in tensors], 1))


def add(a: SparseTensor, b: SparseTensor) -> SparseTensor:
    """Elementwise sum of two tensors with identical coordinates (residual connections)."""
    if not _same_coords(a, b):
        raise ValueError("b has different coords or stride than a")
    return a.replace(a.feats + b.feats)


def scatter_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """`out[index[m]] += values[m]` into `n` rows, bit-identical run to run on every device.

    CPU: `index_add_` (sequential). Elsewhere a stable sort by row and a fixed-order
    `segment_reduce` instead of atomics, whose summation order varies between runs.
    """
    if values.device.type == "cpu":
        return values.new_zeros((n,) + values.shape[1:]).index_add_(0, index, values)
    order = torch.sort(index, stable=True).indices
    lengths = torch.bincount(index, minlength=n)
    return torch.segment_reduce(values.index_select(0, order), "sum", lengths=lengths, unsafe=True)
