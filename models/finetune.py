"""FIP finetuning regimes (Image2Point, Sec. 3): which parameters train, which BN statistics freeze.

Regimes (docs/regimes.md); "copied" means every backbone tensor that comes
from the 2D network, i.e. all but the backbone's `fresh_prefixes()` (the head, and the stem when
it is `new`); modules outside the backbone (e.g. a LightningModule's own layers) count as new:

    regime   new layers   copied kernels   copied BN affine   copied BN running stats
    io       train        frozen           frozen             frozen (BN kept in eval mode)
    ioms     train        frozen           frozen             updated (BN in train mode)
    iobn     train        frozen           train              updated
    all      train        train            train              updated
    scratch  as `all`, after re-initialising the backbone (the from-scratch baseline)

Frozen BN layers must stay in eval mode through every `model.train()` (Lightning calls it each
epoch): the backbone's `train()` (`FrozenBNMixin`) re-applies eval to them by *name*, so it also
survives BN modules being replaced, e.g. by `i2p.sparse.convert_sync_batchnorm` (which shares the
Parameter objects, so `requires_grad` survives as well).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["REGIMES", "FrozenBNMixin", "RegimeSummary", "apply_regime", "trainable_parameters",
           "regime_summary", "count_parameters", "find_backbone"]

REGIMES = ("io", "ioms", "iobn", "all", "scratch")


class FrozenBNMixin:
    """`train(mode)` keeps the BN layers named in `frozen_bn` (relative names) in eval mode."""

    frozen_bn: tuple[str, ...] = ()

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        for name in self.frozen_bn:
            self.get_submodule(name).train(False)  # type: ignore[attr-defined]
        return self


@dataclass
class RegimeSummary:
    """What `apply_regime` did; `str()` is the one-line summary for logs."""

    regime: str
    trainable: int
    total: int
    frozen_bn: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        pct = 100.0 * self.trainable / max(self.total, 1)
        return (f"regime {self.regime}: {self.trainable:,} trainable / {self.total:,} parameters "
                f"({pct:.2f}%), {len(self.frozen_bn)} BN layers frozen in eval mode")


def find_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """(`prefix`, backbone): `model` itself or its single submodule offering `fresh_prefixes()`."""
    found = [(n, m) for n, m in model.named_modules()
             if hasattr(m, "fresh_prefixes") and isinstance(m, FrozenBNMixin)]
    if len(found) != 1:
        names = [n or "<root>" for n, _ in found]
        raise ValueError(f"apply_regime needs exactly one backbone (a SparseResNet-like module with "
                         f"fresh_prefixes() and FrozenBNMixin) inside {type(model).__name__}, found {names}")
    return found[0]


def _is_copied(name: str, fresh: tuple[str, ...]) -> bool:
    return not any((name + ".").startswith(p) for p in fresh)


def apply_regime(model: nn.Module, regime: str) -> RegimeSummary:
    """Set `requires_grad` and the frozen-BN list for `regime` on `model` (backbone or a wrapper).

    Idempotent; switching regimes later is allowed. Returns the summary (also `str()`-able).
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    prefix, backbone = find_backbone(model)
    if regime == "scratch":
        if "transfer" in getattr(backbone, "pretrained_cfg", {}):
            warnings.warn("regime 'scratch': re-initialising a backbone that holds transferred weights",
                          stacklevel=2)
            backbone.pretrained_cfg.pop("transfer")
        backbone.init_weights()
    fresh = backbone.fresh_prefixes()
    bn_names = {n for n, m in backbone.named_modules() if isinstance(m, _BatchNorm)}
    for p in model.parameters():
        p.requires_grad_(True)
    frozen_bn: tuple[str, ...] = ()
    if regime in ("io", "ioms", "iobn"):
        for name, p in backbone.named_parameters():
            if not _is_copied(name, fresh):
                continue
            owner = name.rpartition(".")[0]
            p.requires_grad_(regime == "iobn" and owner in bn_names)
        if regime == "io":
            frozen_bn = tuple(sorted(n for n in bn_names if _is_copied(n, fresh)))
    backbone.frozen_bn = frozen_bn
    backbone.train(backbone.training)  # apply the BN modes now
    total, trainable = count_parameters(model)
    return RegimeSummary(regime, trainable, total, tuple(f"{prefix}.{n}" if prefix else n for n in frozen_bn))


def trainable_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Only the parameters that train: what the optimizer should receive."""
    return (p for p in model.parameters() if p.requires_grad)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def regime_summary(model: nn.Module) -> str:
    """One line: trainable / total parameters and frozen BN layers of `model` as it is now."""
    _, backbone = find_backbone(model)
    total, trainable = count_parameters(model)
    return str(RegimeSummary("current", trainable, total, tuple(backbone.frozen_bn)))
