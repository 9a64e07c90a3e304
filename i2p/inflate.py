"""2D state dict -> 3D sparse state dict (Image2Point inflation); pure PyTorch, no Lightning.

A 2D kernel `W[out, in/groups, kh, kw]` becomes a 3D kernel `[K, in/groups, out]` laid out in the
sparse engine's (torchsparse's) kernel-offset order, by spreading it along one depth axis. Image
rows and columns land on the two other axes (docs/inflation.md):

    depth axis   rows ->  cols ->  official Image2Point name
    y (default)  z        x        z-axis
    z            y        x        y-axis
    x            y        z        x-axis

The official names are accepted as aliases; note that the official `z-axis` means depth `y`.
This module knows nothing about the sparse engine, so it is the one place that defines the layout;
tests check it against the engine's own convolution.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch

__all__ = [
    "KernelMode", "Shortcut", "DepthAxis", "KERNEL_MODES", "SHORTCUTS", "DEPTH_AXES", "AXIS_ALIASES", "PLANE_AXES",
    "InflateConfig",
    "normalize_depth_axis", "kernel_index", "inflate_kernel", "pointwise_kernel",
    "repeat_kernel", "inflate_state_dict", "inflate_entry", "is_shortcut_key",
]

KernelMode = Literal["copy", "inflate", "center"]
Shortcut = Literal["repeat", "point"]
#: x/y/z or the official code's names (note: its `z-axis` is depth y)
DepthAxis = Literal["y", "z", "x", "z-axis", "y-axis", "x-axis"]
KERNEL_MODES: tuple[str, ...] = get_args(KernelMode)
SHORTCUTS: tuple[str, ...] = get_args(Shortcut)
DEPTH_AXES = ("y", "z", "x")
AXIS_ALIASES = {"z-axis": "y", "y-axis": "z", "x-axis": "x"}
assert get_args(DepthAxis) == DEPTH_AXES + tuple(AXIS_ALIASES)
#: depth axis -> (axis that image rows land on, axis that image columns land on)
PLANE_AXES = {"y": ("z", "x"), "z": ("y", "x"), "x": ("y", "z")}


def normalize_depth_axis(depth_axis: str) -> str:
    """`x`/`y`/`z`, or an official alias (`z-axis` is depth `y`!), as `x`/`y`/`z`."""
    name = str(depth_axis).strip().lower()
    name = AXIS_ALIASES.get(name, name)
    if name not in DEPTH_AXES:
        raise ValueError(f"depth_axis must be one of {DEPTH_AXES} or an official alias "
                         f"{tuple(AXIS_ALIASES)}, got {depth_axis!r}")
    return name


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


@dataclass(frozen=True)
class InflateConfig:
    """The three inflation settings, validated; stored in 3D checkpoints so a load can check them."""

    kernel_mode: KernelMode = "copy"
    depth_axis: DepthAxis = "y"
    shortcut: Shortcut = "repeat"

    def __post_init__(self) -> None:
        _check_choice(self.kernel_mode, KERNEL_MODES, "kernel_mode")
        _check_choice(self.shortcut, SHORTCUTS, "shortcut")
        object.__setattr__(self, "depth_axis", normalize_depth_axis(self.depth_axis))

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: InflateConfig | Mapping[str, str] | None) -> InflateConfig:
        """An `InflateConfig` from itself, its dict (as stored in checkpoints) or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"kernel_mode", "depth_axis", "shortcut"}
            if unknown:
                raise ValueError(f"inflate: unknown settings {sorted(unknown)}; expected kernel_mode, depth_axis, "
                                 f"shortcut")
            return cls(**value)
        raise TypeError(f"inflate must be an InflateConfig or a dict of its settings, got {type(value).__name__}")


def kernel_index(offset: tuple[int, int, int], kernel_size: int) -> int:
    """Row of a 3D kernel holding the weight of one unit `(dx, dy, dz)` offset (odd kernels).

    The inverse of `i2p.sparse.get_kernel_offsets` (torchsparse's order, x fastest for odd K).
    """
    if kernel_size % 2 == 0:
        raise ValueError("kernel_index is defined for odd kernel sizes only")
    c = kernel_size // 2
    ix, iy, iz = (int(o) + c for o in offset)
    if not all(0 <= i < kernel_size for i in (ix, iy, iz)):
        raise ValueError(f"offset {offset} lies outside a {kernel_size}^3 kernel")
    return (iz * kernel_size + iy) * kernel_size + ix


def inflate_kernel(weight: torch.Tensor, kernel_mode: str = "copy", depth_axis: str = "y") -> torch.Tensor:
    """2D `[out, in/g, k, k]` (k odd) -> 3D `[k^3, in/g, out]` spread along `depth_axis`.

    `copy` repeats the 2D kernel on every depth slice (the paper's choice), `inflate` also divides
    by k so a constant field keeps its response (I3D), `center` uses the middle slice only, so a
    planar input sees exactly the 2D kernel.
    """
    _check_choice(kernel_mode, KERNEL_MODES, "kernel_mode")
    axis = normalize_depth_axis(depth_axis)
    if weight.dim() != 4:
        raise ValueError(f"expected a 4D conv weight [out, in, kh, kw], got shape {tuple(weight.shape)}")
    out_c, in_c, kh, kw = weight.shape
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"only square odd kernels can be inflated, got {kh}x{kw}")
    k = kh
    w = weight.permute(2, 3, 1, 0)  # [rows, cols, in, out]
    if kernel_mode == "center":
        t = weight.new_zeros((k, k, k, in_c, out_c))
        t[:, :, k // 2] = w
    else:
        t = w.unsqueeze(2).expand(k, k, k, in_c, out_c)
        if kernel_mode == "inflate":
            t = t / k
    # t's first three dims are (rows, cols, depth); reorder them to the engine's (z, y, x).
    rows, cols = PLANE_AXES[axis]
    dim_of = {rows: 0, cols: 1, axis: 2}
    t = t.permute(dim_of["z"], dim_of["y"], dim_of["x"], 3, 4)
    return t.reshape(k ** 3, in_c, out_c).contiguous()


def pointwise_kernel(weight: torch.Tensor) -> torch.Tensor:
    """2D 1x1 conv `[out, in/g, 1, 1]` -> the engine's K = 1 kernel `[in/g, out]` (exact)."""
    if weight.dim() != 4 or weight.shape[2:] != (1, 1):
        raise ValueError(f"expected a 1x1 conv weight [out, in, 1, 1], got shape {tuple(weight.shape)}")
    return weight[:, :, 0, 0].t().contiguous()


def repeat_kernel(weight: torch.Tensor) -> torch.Tensor:
    """2D 1x1 shortcut `[out, in, 1, 1]` -> 2x2x2 kernel `[8, in, out]`, the weight on every offset.

    This is the official code's shortcut: with stride 2, each coarse voxel sums its (up to 8)
    children before the 1x1 projection, instead of sampling one of them.
    """
    return pointwise_kernel(weight).unsqueeze(0).expand(8, -1, -1).contiguous()


def is_shortcut_key(key: str) -> bool:
    """Timm / torchvision name the projection shortcut conv `...downsample.0.weight`."""
    return key.endswith("downsample.0.weight")


def inflate_state_dict(
    state_2d: Mapping[str, torch.Tensor],
    kernel_mode: str = "copy",
    depth_axis: str = "y",
    shortcut: str = "repeat",
    *,
    shortcut_key: Callable[[str], bool] = is_shortcut_key,
) -> OrderedDict[str, torch.Tensor]:
    """Every 4D conv `<m>.weight` becomes `<m>.kernel` in the engine's layout; the rest is kept.

    k x k convs (k > 1) are inflated with `kernel_mode` along `depth_axis`; 1x1 convs become K = 1
    kernels `[in, out]`, except shortcut convs under `shortcut="repeat"` (2x2x2, see
    `repeat_kernel`). BN parameters, running statistics and any non-conv tensor (e.g. the 2D
    classifier) pass through unchanged (same tensor objects: clone before mutating in place).
    """
    cfg = InflateConfig(kernel_mode, depth_axis, shortcut)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_2d.items():
        new_key, new_value = inflate_entry(key, value, cfg, shortcut_key=shortcut_key)
        out[new_key] = new_value
    return out


def inflate_entry(
    key: str,
    value: torch.Tensor,
    cfg: InflateConfig,
    *,
    shortcut_key: Callable[[str], bool] = is_shortcut_key,
) -> tuple[str, torch.Tensor]:
    """One (key, tensor) of a 2D state dict as its 3D (key, tensor); see `inflate_state_dict`.

    Exposed so a transfer can stream key by key (peak memory: the model plus one kernel).
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{key}: expected a tensor, got {type(value).__name__}")
    if value.dim() != 4:
        return key, value
    if not key.endswith(".weight"):
        raise ValueError(f"{key}: a 4D tensor that is not a conv '.weight' cannot be inflated")
    new_key = key[: -len("weight")] + "kernel"
    try:
        if tuple(value.shape[2:]) == (1, 1):
            if shortcut_key(key) and cfg.shortcut == "repeat":
                return new_key, repeat_kernel(value)
            return new_key, pointwise_kernel(value)
        return new_key, inflate_kernel(value, cfg.kernel_mode, cfg.depth_axis)
    except ValueError as err:
        raise ValueError(f"{key} (shape {tuple(value.shape)}): {err}") from None
