"""Elementwise modules on a SparseTensor's features (one generic wrapper, a few named ones)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..tensor import SparseTensor


def apply_to_feats(fn: Callable[[torch.Tensor], torch.Tensor], x: Any) -> Any:
    """`fn` on `x.feats` keeping coords/stride/cache; plain tensors pass straight through.

    Works with any feature-wise module (`nn.BatchNorm1d`, `nn.SyncBatchNorm`, `nn.Dropout`, ...).
    """
    if isinstance(x, SparseTensor):
        return x.replace(fn(x.feats))
    return fn(x)


class Elementwise(nn.Module):
    """Wrap any elementwise/feature-wise module (e.g. `nn.Hardswish()`) for sparse tensors.

    The wrapped module is a child named `module` (its state-dict keys get that prefix).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Any) -> Any:
        return apply_to_feats(self.module, x)


class ReLU(nn.ReLU):
    """`nn.ReLU` that also accepts a SparseTensor (same arguments, same repr)."""

    def forward(self, x: Any) -> Any:
        return apply_to_feats(super().forward, x)


class LeakyReLU(nn.LeakyReLU):
    def forward(self, x: Any) -> Any:
        return apply_to_feats(super().forward, x)


class SiLU(nn.SiLU):
    def forward(self, x: Any) -> Any:
        return apply_to_feats(super().forward, x)


class GELU(nn.GELU):
    def forward(self, x: Any) -> Any:
        return apply_to_feats(super().forward, x)
