"""Feature-level operations on tensors sharing coordinates (UNet skip concatenation, sums)."""
from __future__ import annotations

from typing import Sequence

import torch

from .tensor import SparseTensor


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
