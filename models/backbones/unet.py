"""Sparse residual UNet for segmentation: a fresh stem, the inflated ResNet stages, a fresh decoder.

The encoder is a timm ResNet's ``layer1..layer4`` under timm's names (built by the same
``make_stages`` as ``SparseResNet``), so 2D weights transfer by name through ``models.weights``
like the classifier's; everything else is fresh (``fresh_prefixes()``). Layout and counts of the
official Image2Point segmentation network (its SPVCNN18): docs/recipes.md, docs/segmentation.md.

    points -> voxels -> stem (2 x [k3 conv, BN, ReLU], stride 1)            x0
                     -> down (k2/s2 conv, BN, ReLU) -> layer1 (stride 2)    x1
                     -> layer2 (4) -> layer3 (8) -> layer4 (16)             x2, x3, x4
                     -> up1..up4: transposed conv (k3/s2; the last k2/s2) + BN + ReLU,
                        concatenation with the skip (x3, x2, x1, x0), two residual blocks
                     -> devoxelise at the points (trilinear by default) -> Linear head
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2p.inflate import SHORTCUTS, InflateConfig
from i2p.sparse import BatchNorm, Conv3d, ReLU, SparseTensor, cat, devoxelize

from .heads import ClassifierHead
from .resnet import _BLOCKS, ARCHS, BasicBlock, _timm_cfg, init_fresh, make_shortcut, make_stages, resolve_arch

__all__ = ["UNET_PRESETS", "DEVOXELIZE_MODES", "UpBlock", "SparseResUNet", "create_sparse_resunet"]

#: decoder widths (up1..up4) by preset; ``official`` is the official code's
UNET_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "official": (512, 256, 192, 192),
    "light": (128, 96, 64, 64),  # a CPU-sized decoder (tests, demo, benchmarks); same encoder
}
DEVOXELIZE_MODES = ("trilinear", "nearest")
STEM_WIDTH = 64  # timm ResNets' layer1 takes 64 channels: the down-sample must produce them


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, transposed: bool = False) -> list[nn.Module]:
    return [Conv3d(cin, cout, k, stride=stride, transposed=transposed), BatchNorm(cout), ReLU(inplace=True)]


class UpBlock(nn.Module):
    """Transposed conv back to the skip's stride, concatenation with the skip, two residual blocks.

    The first block projects ``width + skip`` channels to ``width`` with the encoder's shortcut
    kind (``repeat``: a 2x2x2 conv, as the official code's decoder; ``point``: 1x1x1).
    """

    def __init__(self, cin: int, skip: int, width: int, kernel: int, shortcut: str) -> None:
        super().__init__()
        self.up = nn.Sequential(*_conv_bn_relu(cin, width, kernel, stride=2, transposed=True))
        proj = make_shortcut(width + skip, width, 1, shortcut)
        self.blocks = nn.Sequential(BasicBlock(width + skip, width, 1, proj), BasicBlock(width, width))

    def forward(self, x: SparseTensor, skip: SparseTensor) -> SparseTensor:
        return self.blocks(cat([self.up(x), skip]))


class SparseResUNet(nn.Module):
    """Segmentation UNet around an inflated timm ResNet encoder; one output row per point.

    Args:
        backbone: timm ResNet name (``resnet18``, ``resnet34``, ``resnet50``, optionally with a tag,
            e.g. ``resnet18.tv_in1k``): the encoder stages ``layer1..layer4``.
        in_channels: voxel feature channels (S3DIS ``voxel_xyz+rgb_centred``: 6).
        num_classes: per-point classes.
        preset: ``official`` (decoder 512/256/192/192, the official network) or ``light``
            (128/96/64/64, for CPUs); ``decoder_channels`` overrides the preset's widths.
        inflate: the inflation settings (``InflateConfig`` or its dict); its ``shortcut`` shapes the
            encoder's and decoder's projections, all of it is recorded in ``pretrained_cfg``.
        devoxelize: ``trilinear`` (default, the official head: the 8 voxel centres around each
            point, engine's centre convention) or ``nearest`` (the point's own voxel, i.e. the voxel
            prediction mapped through the inverse map).
        num_categories: > 0 appends a one-hot per-shape category to every point's head input
            (ShapeNetPart's 16 categories).

    With ``preset="official"``, ``resnet18``, 6 input channels and 14 classes the network has
    99,909,518 parameters, exactly the official SPVCNN18's (4 inputs, 19 classes: 99,907,027);
    the encoder (``layer1..layer4``, kernels + BN affine, the ImageNet-initialised part) is
    34,342,144 of them, as in the official code. The rest (stem 121,216; down-sample 32,896;
    decoder 65,410,560; head 2,702) is fresh.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 6,
        num_classes: int = 13,
        preset: str = "official",
        decoder_channels: Sequence[int] | None = None,
        inflate: InflateConfig | Mapping[str, str] | None = None,
        devoxelize: str = "trilinear",
        num_categories: int = 0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if preset not in UNET_PRESETS:
            raise ValueError(f"preset must be one of {tuple(UNET_PRESETS)}, got {preset!r}")
        if devoxelize not in DEVOXELIZE_MODES:
            raise ValueError(f"devoxelize must be one of {DEVOXELIZE_MODES}, got {devoxelize!r}")
        widths = tuple(UNET_PRESETS[preset] if decoder_channels is None else decoder_channels)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"decoder_channels needs 4 positive widths (up1..up4), got {widths}")
        if num_categories < 0 or num_classes < 1 or in_channels < 1:
            raise ValueError(f"need in_channels >= 1, num_classes >= 1, num_categories >= 0; got {in_channels}, "
                             f"{num_classes}, {num_categories}")
        cfg = InflateConfig.coerce(inflate)
        if cfg.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {cfg.shortcut!r}")
        arch, _ = resolve_arch(backbone)
        spec = dict(ARCHS[arch])
        block = _BLOCKS[spec.pop("block")]
        layers = spec.pop("layers")
        channels = (64, 128, 256, 512)
        self.in_channels, self.num_classes, self.num_categories = in_channels, num_classes, num_categories
        self.preset, self.decoder_channels, self.devoxelize_mode = preset, widths, devoxelize
        self.shortcut = cfg.shortcut

        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, STEM_WIDTH, 3), *_conv_bn_relu(STEM_WIDTH, STEM_WIDTH, 3))
        self.down = nn.Sequential(*_conv_bn_relu(STEM_WIDTH, STEM_WIDTH, 2, stride=2))
        for name, stage in make_stages(block, layers, channels, STEM_WIDTH, spec.get("cardinality", 1),
                                       spec.get("base_width", 64), cfg.shortcut):
            self.add_module(name, stage)
        skips = [c * block.expansion for c in channels[:3]][::-1] + [STEM_WIDTH]  # x3, x2, x1, x0
        cin = channels[3] * block.expansion
        for i, (width, skip) in enumerate(zip(widths, skips)):
            self.add_module(f"up{i + 1}", UpBlock(cin, skip, width, 2 if i == 3 else 3, cfg.shortcut))
            cin = width
        self.num_features = widths[-1]
        self.head = ClassifierHead(self.num_features + num_categories, num_classes, "linear", drop_rate=drop_rate)
        self.pretrained_cfg: dict[str, Any] = {"first_conv": "stem.0", "classifier": "head.fc",
                                               "architecture": arch, "model_name": backbone,
                                               "inflate": cfg.as_dict()}
        self.pretrained_cfg.update(_timm_cfg(backbone))
        self.init_weights()

    # --- structure used by weight transfer and finetuning regimes ---------------------------
    def stem_modules(self) -> tuple[str, ...]:
        return ("stem", "down")

    def stage_modules(self) -> tuple[str, ...]:
        return ("layer1", "layer2", "layer3", "layer4")

    def decoder_modules(self) -> tuple[str, ...]:
        return ("up1", "up2", "up3", "up4")

    def head_modules(self) -> tuple[str, ...]:
        return ("head",)

    def fresh_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes never taken from 2D weights: the 2D stem's names (``conv1.``, ``bn1.``,
        dropped from a 2D checkpoint), the new stem, down-sample, decoder and head.
        """
        mods = self.stem_modules() + self.decoder_modules() + self.head_modules()
        return ("conv1.", "bn1.") + tuple(f"{m}." for m in mods)

    def init_weights(self) -> None:
        init_fresh(self)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    # --- forward ---------------------------------------------------------------------------
    def _check_input(self, x: SparseTensor) -> None:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"SparseResUNet expects a SparseTensor, got {type(x).__name__}")
        if x.stride != (1, 1, 1):
            raise ValueError(f"SparseResUNet expects voxels at stride 1, got stride {x.stride}")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.feats.shape[1]} feature channels, the model expects "
                             f"in_channels={self.in_channels}")

    def forward_intermediates(self, x: SparseTensor) -> list[SparseTensor]:
        """Encoder levels ``[x0 (stem, stride 1), x1 (layer1, 2), x2 (4), x3 (8), x4 (16)]``."""
        self._check_input(x)
        x0 = self.stem(x)
        out, h = [x0], self.down(x0)
        for name in self.stage_modules():
            h = getattr(self, name)(h)
            out.append(h)
        return out

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        """Decoder output at the input voxels (stride 1), ``num_features`` channels."""
        x0, x1, x2, x3, x4 = self.forward_intermediates(x)
        h = x4
        for name, skip in zip(self.decoder_modules(), (x3, x2, x1, x0)):
            h = getattr(self, name)(h, skip)
        return h

    def point_features(self, feats: SparseTensor, points: Tensor | None = None, batch: Tensor | None = None,
                       voxel_size: float = 1.0, inverse: Tensor | None = None) -> Tensor:
        """Voxel features at points ``[P, D]``: ``nearest`` through ``inverse`` (point -> voxel row;
        equal to the engine's nearest devoxelisation) or ``trilinear`` at ``points`` (world units,
        ``batch [P]`` their sample, ``voxel_size`` the voxelisation's). Without points: the voxels.
        """
        if self.devoxelize_mode == "nearest" and inverse is not None:
            return feats.feats.index_select(0, inverse)
        if points is None:
            if inverse is not None:
                raise ValueError("trilinear devoxelisation needs the points, not only the inverse map")
            return feats.feats
        return devoxelize(feats, points, batch, voxel_size, mode=self.devoxelize_mode)

    def head_input(self, point_feats: Tensor, category: Tensor | None = None) -> Tensor:
        """The head's input: point features, with the one-hot category ``[P]`` appended when used."""
        if self.num_categories == 0:
            return point_feats
        if category is None:
            raise ValueError(f"this model takes a per-shape category ({self.num_categories} categories): pass "
                             "category [P]")
        return torch.cat([point_feats, F.one_hot(category.long(), self.num_categories).to(point_feats.dtype)], 1)

    def forward_head(self, head_input: Tensor) -> Tensor:
        return self.head(head_input)

    def forward(self, x: SparseTensor, points: Tensor | None = None, batch: Tensor | None = None,
                voxel_size: float = 1.0, inverse: Tensor | None = None, category: Tensor | None = None) -> Tensor:
        """Logits, one row per point (``points [P, 3]`` or ``inverse [P]``), or per voxel without either."""
        feats = self.forward_features(x)
        return self.forward_head(self.head_input(self.point_features(feats, points, batch, voxel_size, inverse),
                                                 category))


def create_sparse_resunet(
    name: str = "resnet18",
    pretrained: bool | str | os.PathLike | nn.Module | Mapping[str, torch.Tensor] = False,
    inflate: InflateConfig | Mapping[str, str] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SparseResUNet:
    """Build a ``SparseResUNet`` and, if asked, transfer 2D (or ``i2p inflate`` 3D) weights into its
    encoder, exactly as ``create_sparse_resnet`` does (strict, by name; report in
    ``model.pretrained_cfg["transfer"]``). ``kwargs`` go to ``SparseResUNet``.
    """
    from models.weights import load_pretrained  # loading stays outside the architecture

    cfg = InflateConfig.coerce(inflate)
    model = SparseResUNet(backbone=name, inflate=cfg, **kwargs)
    if pretrained is not False and pretrained is not None:
        model.pretrained_cfg["transfer"] = load_pretrained(model, pretrained, cfg, name=name,
                                                           pretrained_cfg_overlay=pretrained_cfg_overlay)
    return model
