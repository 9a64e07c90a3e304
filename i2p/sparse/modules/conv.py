"""`Conv3d` module: parameter `kernel [K, in/groups, out]` (`[in/groups, out]` when K = 1)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..backends import check_backend, require_backend
from ..functional.conv import PADDING_RULES, conv3d
from ..tensor import IntOr3, SparseTensor, to_triple

__all__ = ["Conv3d", "set_backend"]


class Conv3d(nn.Module):
    """Sparse (transposed) 3D convolution with torchsparse's weight layout and offset order.

    `backend` (`auto | i2p | spconv | torchsparse`, None = the engine default) picks the library
    that runs the arithmetic; it is a plain attribute, not state: checkpoints do not depend on it.
    `padding_rule` (`floor`, the default, or `padded`) places the outputs of a strided conv
    (docs/engine.md, "Convolution").
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOr3 = 3, stride: IntOr3 = 1,
                 dilation: IntOr3 = 1, bias: bool = False, transposed: bool = False, groups: int = 1,
                 padding_rule: str = "floor", backend: str | None = None) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if padding_rule not in PADDING_RULES:
            raise ValueError(f"padding_rule must be one of {PADDING_RULES}, got {padding_rule!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = to_triple(kernel_size, "kernel_size")
        self.stride = to_triple(stride, "stride")
        self.dilation = to_triple(dilation, "dilation")
        self.transposed, self.groups = bool(transposed), groups
        self.padding_rule = padding_rule
        self.backend = check_backend(backend)
        self.kernel_volume = math.prod(self.kernel_size)
        shape = (in_channels // groups, out_channels)
        if self.kernel_volume > 1:
            shape = (self.kernel_volume,) + shape
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Torchsparse's init: uniform ±1/sqrt(fan) with fan = channels·K (out for transposed)."""
        fan = (self.out_channels if self.transposed else self.in_channels // self.groups) * self.kernel_volume
        std = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -std, std)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -std, std)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Accept torchsparse 2.x's `[1, in, out]` kernels for K = 1 (it keeps the offset axis)."""
        key = prefix + "kernel"
        w = state_dict.get(key)
        if (self.kernel_volume == 1 and isinstance(w, torch.Tensor) and w.dim() == 3 and w.shape[0] == 1
                and tuple(w.shape[1:]) == tuple(self.kernel.shape)):
            state_dict[key] = w[0]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, dilation={self.dilation}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.transposed:
            s += ", transposed=True"
        if self.padding_rule != "floor":
            s += f", padding_rule={self.padding_rule!r}"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return s

    def forward(self, x: SparseTensor) -> SparseTensor:
        return conv3d(x, self.kernel, self.bias, self.kernel_size, self.stride, self.dilation,
                      self.transposed, self.groups, self.padding_rule, self.backend)


def set_backend(module: nn.Module, backend: str | None) -> nn.Module:
    """Set `backend` on every `Conv3d` in `module` (None: back to the engine default); returns it.

    Grouped convs keep the i2p engine when the chosen library has no grouped convolution
    (spconv, torchsparse), so a whole ResNeXt can be switched in one call. Naming a library that
    is not installed raises ImportError with the install hint now, not at the first forward.
    """
    backend = check_backend(backend)
    if backend in ("spconv", "torchsparse"):
        require_backend(backend)
    for m in module.modules():
        if isinstance(m, Conv3d):
            m.backend = "i2p" if (m.groups != 1 and backend in ("spconv", "torchsparse")) else backend
    return module
