"""The planar check: an image laid flat in 3D must give the 2D network's feature maps exactly.

With kernel mode `copy` or `center`, `point` shortcuts and the `inflate` stem, an HxW image placed
on the plane orthogonal to the depth axis (one voxel per pixel, features = the pixel's channels)
only ever meets the middle depth slice of each 3D kernel, and sparse strided convs / max-pools
(outputs at floor(c/s)*s, offsets relative to the output, missing neighbours skipped) reproduce
dense ones with padding k//2 (zero padding for convs, -inf for the max-pool). Shared by the tests
and `i2p inflate --verify`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from i2p.inflate import PLANE_AXES, InflateConfig, normalize_depth_axis
from i2p.sparse import SparseTensor

__all__ = ["image_to_sparse", "sparse_to_image", "randomize_bn_stats_", "planar_errors",
           "build_planar_pair", "STAGE_NAMES"]

STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")
_COL = {"x": 1, "y": 2, "z": 3}  # column of each axis in (batch, x, y, z) coordinates


def image_to_sparse(images: torch.Tensor, depth_axis: str = "y") -> SparseTensor:
    """`[B, C, H, W]` -> one voxel per pixel: row -> rows axis, column -> cols axis, depth 0."""
    rows_axis, cols_axis = PLANE_AXES[normalize_depth_axis(depth_axis)]
    b, c, h, w = images.shape
    bb, rr, cc = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.zeros(b * h * w, 4, dtype=torch.int32)
    coords[:, 0] = bb.reshape(-1)
    coords[:, _COL[rows_axis]] = rr.reshape(-1)
    coords[:, _COL[cols_axis]] = cc.reshape(-1)
    feats = images.permute(0, 2, 3, 1).reshape(-1, c)
    return SparseTensor(feats, coords.to(images.device))


def sparse_to_image(x: SparseTensor, shape: tuple[int, int, int, int], depth_axis: str = "y") -> torch.Tensor:
    """Inverse of `image_to_sparse` at `x`'s stride; checks that the voxels tile the 2D grid exactly."""
    axis = normalize_depth_axis(depth_axis)
    rows_axis, cols_axis = PLANE_AXES[axis]
    b, c, h, w = shape
    s_rows, s_cols = x.stride[_COL[rows_axis] - 1], x.stride[_COL[cols_axis] - 1]
    coords = x.coords.long()
    if bool((coords[:, _COL[axis]] != 0).any()):
        raise AssertionError("voxels left the image plane")
    rows, cols = coords[:, _COL[rows_axis]] // s_rows, coords[:, _COL[cols_axis]] // s_cols
    if x.feats.shape[0] != b * h * w or int(rows.max()) >= h or int(cols.max()) >= w:
        raise AssertionError(f"{x.feats.shape[0]} voxels with rows < {int(rows.max()) + 1}, cols < "
                             f"{int(cols.max()) + 1} do not tile the 2D map {b}x{h}x{w}")
    out = x.feats.new_zeros(b, h, w, c)
    out[coords[:, 0], rows, cols] = x.feats
    return out.permute(0, 3, 1, 2)


@torch.no_grad()
def randomize_bn_stats_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine and running statistics, so the check covers their transfer."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


@torch.no_grad()
def planar_errors(model_3d: nn.Module, model_2d: nn.Module, images: torch.Tensor,
                  depth_axis: str = "y") -> list[dict[str, Any]]:
    """Per stage: the largest absolute difference and the largest 2D magnitude (both eval mode)."""
    model_2d.eval()
    model_3d.eval()
    ref = model_2d.forward_intermediates(images, intermediates_only=True)
    out = model_3d.forward_intermediates(image_to_sparse(images, depth_axis))
    rows = []
    for name, r, o in zip(STAGE_NAMES, ref, out):
        got = sparse_to_image(o, tuple(r.shape), depth_axis)
        rows.append(dict(stage=name, shape=tuple(r.shape), max_abs_err=float((got - r).abs().max()),
                         max_abs_ref=float(r.abs().max())))
    return rows


def build_planar_pair(name_or_args: str | dict[str, Any], kernel_mode: str = "copy", depth_axis: str = "y",
                      model_2d: nn.Module | None = None, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(2D timm model, 3D copy with stem `inflate` and `point` shortcuts) for the planar check.

    `name_or_args`: a registered name, or `SparseResNet` architecture args (`block`, `layers`,
    `channels`, `cardinality`, `base_width`) for reduced test models built with timm's `ResNet`.
    Without `model_2d`, the 2D model gets random weights and randomized BN statistics.
    """
    import timm
    from timm.models.resnet import BasicBlock as Basic2d
    from timm.models.resnet import Bottleneck as Bottle2d
    from timm.models.resnet import ResNet

    from models.weights import load_pretrained

    from .resnet import ARCHS, SparseResNet, resolve_arch

    if isinstance(name_or_args, str):
        arch, _ = resolve_arch(name_or_args)
        args = dict(ARCHS[arch])
    else:
        args = dict(name_or_args)
    if model_2d is None:
        torch.manual_seed(seed)
        if isinstance(name_or_args, str):
            model_2d = timm.create_model(name_or_args, pretrained=False, num_classes=10)
        else:
            block = Basic2d if args["block"] == "basic" else Bottle2d
            extra = {k: args[k] for k in ("channels", "cardinality", "base_width") if k in args}
            model_2d = ResNet(block=block, layers=args["layers"], num_classes=10, **extra)
        randomize_bn_stats_(model_2d, seed)
    model_3d = SparseResNet(num_classes=10, stem="inflate", shortcut="point", **args)
    load_pretrained(model_3d, model_2d, InflateConfig(kernel_mode, depth_axis, model_3d.shortcut))
    return model_2d.eval(), model_3d.eval()
