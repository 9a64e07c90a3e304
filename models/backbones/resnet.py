"""Sparse 3D ResNet / ResNeXt / Wide-ResNet whose modules are named exactly like timm's ResNet.

Same names (`conv1 bn1 act1 maxpool layer1..layer4`, blocks `conv1 bn1 conv2 bn2 [conv3 bn3]
downsample.0 downsample.1`) so 2D weights transfer by name (`models.weights`); the 3D kernels use
the layout of `i2p.inflate`. Layout of this file follows timm's resnet.py: blocks -> stage builder
-> model class -> named variants with their metadata; loading weights stays outside the
architecture (`create_sparse_resnet` calls `models.weights.load_pretrained`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn

from i2p.inflate import SHORTCUTS, InflateConfig
from i2p.sparse import BatchNorm, Conv3d, MaxPool3d, ReLU, SparseTensor, add, global_avg_pool, global_max_pool

from .heads import HEADS, ClassifierHead

__all__ = ["BasicBlock", "Bottleneck", "SparseResNet", "create_sparse_resnet", "ARCHS", "Stem", "STEMS",
           "list_sparse_resnets", "resolve_arch", "init_fresh"]

Stem = Literal["new", "inflate"]
STEMS: tuple[str, ...] = get_args(Stem)


class BasicBlock(nn.Module):
    """3x3x3 -> 3x3x3 residual block (ResNet-18/34); the first conv carries the stride."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        self.conv1 = Conv3d(inplanes, planes, 3, stride=stride)
        self.bn1 = BatchNorm(planes)
        self.act1 = ReLU(inplace=True)
        self.conv2 = Conv3d(planes, planes, 3)
        self.bn2 = BatchNorm(planes)
        self.act2 = ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(add(x, shortcut))


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (strided, grouped) -> 1x1x1 block (ResNet-50+, ResNeXt, Wide-ResNet)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64)) * cardinality  # timm's formula
        outplanes = planes * self.expansion
        self.conv1 = Conv3d(inplanes, width, 1)
        self.bn1 = BatchNorm(width)
        self.act1 = ReLU(inplace=True)
        self.conv2 = Conv3d(width, width, 3, stride=stride, groups=cardinality)
        self.bn2 = BatchNorm(width)
        self.act2 = ReLU(inplace=True)
        self.conv3 = Conv3d(width, outplanes, 1)
        self.bn3 = BatchNorm(outplanes)
        self.act3 = ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(add(x, shortcut))


BlockType = type[BasicBlock] | type[Bottleneck]
_BLOCKS: dict[str, BlockType] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def init_fresh(module: nn.Module) -> None:
    """Fresh init of every layer: the engine's conv init (torchsparse's), BN weight 1 / bias 0 with
    running stats reset, Linear's default. The backbones' ``init_weights``.
    """
    for m in module.modules():
        if isinstance(m, Conv3d):
            m.reset_parameters()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()


def make_shortcut(inplanes: int, outplanes: int, stride: int, shortcut: str) -> nn.Sequential:
    """Projection shortcut `downsample.0` (conv) + `downsample.1` (BN).

    `repeat`: a 2x2x2 conv (the official code's, also at stride 1); `point`: 1x1x1 with the
    block's stride, the exact counterpart of the 2D 1x1 conv.
    """
    k = 2 if shortcut == "repeat" else 1
    return nn.Sequential(Conv3d(inplanes, outplanes, k, stride=stride), BatchNorm(outplanes))


def make_stages(block: BlockType, layers: Sequence[int], channels: Sequence[int], inplanes: int,
                cardinality: int, base_width: int, shortcut: str) -> list[tuple[str, nn.Sequential]]:
    """`layer1..layer4`: stride 1 then 2, 2, 2; a projection wherever shape or stride changes."""
    stages = []
    for i, (num_blocks, planes) in enumerate(zip(layers, channels)):
        stride = 1 if i == 0 else 2
        outplanes = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != outplanes:
            downsample = make_shortcut(inplanes, outplanes, stride, shortcut)
        blocks = []
        for b in range(num_blocks):
            blocks.append(block(inplanes, planes, stride if b == 0 else 1, downsample if b == 0 else None,
                                cardinality=cardinality, base_width=base_width))
            inplanes = outplanes
        stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
    return stages


class SparseResNet(nn.Module):
    """Sparse ResNet on `SparseTensor`s with timm's module names and timm's forward interface.

    Stem `new` (the paper's): a fresh Conv3d(in_channels -> 64, k3, s1) + BN, no ReLU, no pool, so
    the stages run at strides 1, 2, 2, 2. Stem `inflate`: the 2D 7x7/s2 conv (inflated to 7^3) + BN
    + ReLU + sparse 3^3/s2 max-pool, the 2D strides kept.
    """

    def __init__(
        self,
        block: str | BlockType,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        cardinality: int = 1,
        base_width: int = 64,
        channels: Sequence[int] = (64, 128, 256, 512),
        stem: str = "new",
        shortcut: str = "repeat",
        head: str = "linear_bn",
        head_hidden: int = 512,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        block_cls = _BLOCKS[block] if isinstance(block, str) else block
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"layers and channels need 4 entries, got {tuple(layers)} and {tuple(channels)}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.stem_type, self.shortcut, self.head_type, self.global_pool = stem, shortcut, head, global_pool
        self.arch_args: dict[str, Any] = dict(
            block="basic" if block_cls is BasicBlock else "bottleneck", layers=tuple(layers),
            cardinality=cardinality, base_width=base_width, channels=tuple(channels))

        stem_width = 64  # timm's ResNet: a fixed 64-channel 7x7 stem
        if stem == "new":
            self.conv1 = Conv3d(in_channels, stem_width, 3)
            self.bn1 = BatchNorm(stem_width)
            self.act1: nn.Module = nn.Identity()
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = Conv3d(in_channels, stem_width, 7, stride=2)
            self.bn1 = BatchNorm(stem_width)
            self.act1 = ReLU(inplace=True)
            self.maxpool = MaxPool3d(3, stride=2)
        for name, stage in make_stages(block_cls, layers, channels, stem_width, cardinality, base_width, shortcut):
            self.add_module(name, stage)
        self.num_features = channels[-1] * block_cls.expansion
        self.head = ClassifierHead(self.num_features, num_classes, head, head_hidden, drop_rate)
        self.pretrained_cfg: dict[str, Any] = {"first_conv": "conv1", "classifier": "head.fc"}
        self.init_weights()

    # --- structure used by weight transfer and finetuning regimes ---------------------------
    @property
    def default_cfg(self) -> dict[str, Any]:
        """Timm's older name for `pretrained_cfg`."""
        return self.pretrained_cfg

    def stem_modules(self) -> tuple[str, ...]:
        return ("conv1", "bn1")

    def stage_modules(self) -> tuple[str, ...]:
        return ("layer1", "layer2", "layer3", "layer4")

    def head_modules(self) -> tuple[str, ...]:
        return ("head",)

    def fresh_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes never taken from 2D weights: the head, and the stem when `new`."""
        stem = tuple(f"{m}." for m in self.stem_modules()) if self.stem_type == "new" else ()
        return stem + tuple(f"{m}." for m in self.head_modules())

    def init_weights(self) -> None:
        init_fresh(self)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    # --- forward ---------------------------------------------------------------------------
    def _check_input(self, x: SparseTensor) -> None:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"SparseResNet expects a SparseTensor, got {type(x).__name__}")
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.feats.shape[1]} feature channels, the model expects "
                             f"in_channels={self.in_channels}")

    def forward_intermediates(self, x: SparseTensor) -> list[SparseTensor]:
        """`[stem, layer1, layer2, layer3, layer4]`; the stem output is taken before the max-pool,
        as in timm's `forward_intermediates` (so `inflate` stems compare 1:1 with 2D).
        """
        self._check_input(x)
        x = self.act1(self.bn1(self.conv1(x)))
        out = [x]
        x = self.maxpool(x)
        for name in self.stage_modules():
            x = getattr(self, name)(x)
            out.append(x)
        return out

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        self._check_input(x)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_modules():
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: SparseTensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-sample global pool `[B, num_features]` (returned when `pre_logits`), then the head."""
        pooled = global_avg_pool(x) if self.global_pool == "avg" else global_max_pool(x)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- named variants (timm's architectures), without instantiating 2D models -------------------
ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "resnet26": dict(block="bottleneck", layers=(2, 2, 2, 2)),
    "resnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "resnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "resnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "wide_resnet50_2": dict(block="bottleneck", layers=(3, 4, 6, 3), base_width=128),
    "wide_resnet101_2": dict(block="bottleneck", layers=(3, 4, 23, 3), base_width=128),
    "resnext50_32x4d": dict(block="bottleneck", layers=(3, 4, 6, 3), cardinality=32, base_width=4),
    "resnext101_32x8d": dict(block="bottleneck", layers=(3, 4, 23, 3), cardinality=32, base_width=8),
}


def list_sparse_resnets() -> list[str]:
    return list(ARCHS)


def resolve_arch(name: str) -> tuple[str, str | None]:
    """`resnet50.a1_in1k` -> (`resnet50`, `a1_in1k`); ValueError listing the known names."""
    arch, _, tag = name.partition(".")
    if arch not in ARCHS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ARCHS)} (optionally with a "
                         "timm pretrained tag, e.g. resnet50.a1_in1k)")
    return arch, tag or None


def _timm_cfg(name: str) -> dict[str, Any]:
    """Timm's pretrained metadata (mean/std, hub id, ...) for `name`, without building a model."""
    try:
        import timm.models
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # metadata only: a missing entry must not block building the model
        cfg = None
    if cfg is None:
        return {}
    keep = ("architecture", "tag", "hf_hub_id", "url", "mean", "std", "num_classes", "license")
    return {k: getattr(cfg, k) for k in keep if getattr(cfg, k, None) is not None}


def create_sparse_resnet(
    name: str,
    pretrained: bool | str | os.PathLike | nn.Module | Mapping[str, torch.Tensor] = False,
    inflate: InflateConfig | Mapping[str, str] | None = None,
    stem: str = "new",
    in_channels: int = 3,
    num_classes: int = 1000,
    head: str = "linear_bn",
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SparseResNet:
    """Build a named variant and, if asked, transfer 2D (or already inflated 3D) weights into it.

    `inflate`: the inflation settings (`InflateConfig` or its dict; default copy / y / repeat),
    validated here even when no weights load; its `shortcut` shapes the architecture, and the
    settings are recorded in `model.pretrained_cfg["inflate"]`.
    `pretrained`: False (fresh), True (timm hub weights for `name`, cached the timm way; a
    `pretrained_cfg_overlay=dict(file=...)` points timm at a local file), a checkpoint path
    (`.pth/.pt/.safetensors`, timm/torchvision layout or an `i2p inflate` output), a 2D `nn.Module`
    or a state dict. The transfer report is kept in `model.pretrained_cfg["transfer"]`.
    """
    from models.weights import load_pretrained  # loading stays outside the architecture

    cfg = InflateConfig.coerce(inflate)
    arch, _ = resolve_arch(name)
    args = dict(ARCHS[arch], **kwargs)
    model = SparseResNet(num_classes=num_classes, in_channels=in_channels, stem=stem, shortcut=cfg.shortcut,
                         head=head, **args)
    model.pretrained_cfg.update(_timm_cfg(name))
    model.pretrained_cfg.update(architecture=arch, model_name=name, inflate=cfg.as_dict())
    if pretrained is not False and pretrained is not None:
        model.pretrained_cfg["transfer"] = load_pretrained(model, pretrained, cfg, name=name,
                                                           pretrained_cfg_overlay=pretrained_cfg_overlay)
    return model
