"""`Conv3d` module: parameter `kernel [K, in/groups, out]` (`[in/groups, out]` when K = 1)."""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from ..functional.conv import conv3d
from ..tensor import SparseTensor, to_triple

IntOr3 = Union[int, Sequence[int]]


class Conv3d(nn.Module):
    """Sparse (transposed) 3D convolution with torchsparse's weight layout and offset order."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOr3 = 3, stride: IntOr3 = 1,
                 dilation: IntOr3 = 1, bias: bool = False, transposed: bool = False, groups: int = 1) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = to_triple(kernel_size, "kernel_size")
        self.stride = to_triple(stride, "stride")
        self.dilation = to_triple(dilation, "dilation")
        self.transposed, self.groups = bool(transposed), groups
        self.kernel_volume = math.prod(self.kernel_size)
        shape = (in_channels // groups, out_channels)
        if self.kernel_volume > 1:
            shape = (self.kernel_volume,) + shape
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchsparse's init: uniform ±1/sqrt(fan) with fan = channels·K (out for transposed)."""
        fan = (self.out_channels if self.transposed else self.in_channels // self.groups) * self.kernel_volume
        std = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -std, std)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -std, std)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, dilation={self.dilation}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.transposed:
            s += ", transposed=True"
        return s

    def forward(self, x: SparseTensor) -> SparseTensor:
        return conv3d(x, self.kernel, self.bias, self.kernel_size, self.stride, self.dilation,
                      self.transposed, self.groups)
