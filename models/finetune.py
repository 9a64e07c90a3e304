"""FIP finetuning regimes (Image2Point, Sec. 3): which parameters train, which BN statistics freeze.

The regimes are data (``REGIMES``, docs/regimes.md): ``apply_regime`` reads a ``Regime`` record and
applies it to the module it is given (a LightningModule or a bare backbone). "Copied" means every
backbone tensor that comes from the 2D network, i.e. all but the backbone's ``fresh_prefixes()``
(the head, and the stem when it is ``new``); modules outside the backbone count as new.

Frozen BN layers must stay in eval mode through every ``model.train()`` (Lightning calls it each
epoch). The rule is installed on the given module itself: its ``train`` becomes the class's
``train`` followed by putting the frozen BN layers back to eval, by *name*, so it survives BN
modules being replaced (``i2p.sparse.convert_sync_batchnorm`` shares the Parameter objects, so
``requires_grad`` survives as well). The backbone class carries no training policy.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "RegimeName", "Regime", "REGIMES", "RegimeSummary", "apply_regime", "get_regime", "frozen_bn_names",
    "trainable_parameters", "regime_summary", "count_parameters", "find_backbone",
]  # fmt: skip


#: the regime names, for type hints (LightningCLI rejects a typo at parse time, listing these)
RegimeName = Literal["io", "ioms", "iobn", "all", "scratch"]


@dataclass(frozen=True)
class Regime:
    """What one finetuning regime trains and freezes (the columns of docs/regimes.md)."""

    name: str
    train_copied_kernels: bool  # copied conv kernels (and any copied non-BN tensor) get gradients
    train_copied_bn_affine: bool  # copied BN weight/bias get gradients
    update_copied_bn_stats: bool  # copied BN layers run in train mode (running statistics move)
    needs_pretrained: bool  # the regime means something only with 2D weights
    reinit: bool = False  # re-initialise the backbone first (the from-scratch baseline)
    description: str = ""


REGIMES: dict[str, Regime] = {
    r.name: r
    for r in (
        Regime("io", False, False, False, True, description="FIP-IO: new stem and head train, copied layers frozen"),
        Regime("ioms", False, False, True, True, description="FIP-IO, copied BN statistics update"),
        Regime("iobn", False, True, True, True, description="FIP-IO+BN: also copied BN affine and statistics"),
        Regime("all", True, True, True, True, description="FIP-ALL: everything trains"),
        Regime("scratch", True, True, True, False, reinit=True, description="random init, everything trains"),
    )
}
assert tuple(REGIMES) == get_args(RegimeName), "RegimeName must list the REGIMES"


def get_regime(regime: str | Regime) -> Regime:
    """The ``Regime`` record of a name (ValueError listing the names otherwise)."""
    if isinstance(regime, Regime):
        return regime
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {tuple(REGIMES)}, got {regime!r}")
    return REGIMES[regime]


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


class _TrainKeepingBNFrozen:
    """Installed as ``module.train`` by `apply_regime`: the class's own ``train``, then the named
    BN layers back to eval. A picklable object (not a closure), so the module still pickles and
    deep-copies (DDP spawn, checkpoint callbacks).
    """

    def __init__(self, module: nn.Module, names: tuple[str, ...]) -> None:
        self.module, self.names = module, names

    def __call__(self, mode: bool = True) -> nn.Module:
        type(self.module).train(self.module, mode)
        for name in self.names:
            self.module.get_submodule(name).train(False)
        return self.module


def frozen_bn_names(module: nn.Module) -> tuple[str, ...]:
    """Names (relative to ``module``) of the BN layers its regime keeps in eval mode."""
    train = module.__dict__.get("train")
    return train.names if isinstance(train, _TrainKeepingBNFrozen) else ()


def find_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """(`prefix`, backbone): `model` itself or its single submodule offering `fresh_prefixes()`."""
    found = [(n, m) for n, m in model.named_modules() if callable(getattr(m, "fresh_prefixes", None))]
    if len(found) != 1:
        names = [n or "<root>" for n, _ in found]
        raise ValueError(f"apply_regime needs exactly one backbone (a module with fresh_prefixes(), e.g. "
                         f"SparseResNet) inside {type(model).__name__}, found {names}")
    return found[0]


def _is_copied(name: str, fresh: tuple[str, ...]) -> bool:
    return not any((name + ".").startswith(p) for p in fresh)


def apply_regime(model: nn.Module, regime: str | Regime) -> RegimeSummary:
    """Set `requires_grad` and the frozen-BN rule of `regime` on `model` (backbone or a wrapper).

    Idempotent; switching regimes later is allowed. Returns the summary (also `str()`-able).
    """
    spec = get_regime(regime)
    prefix, backbone = find_backbone(model)
    if spec.reinit:
        if "transfer" in getattr(backbone, "pretrained_cfg", {}):
            warnings.warn(f"regime {spec.name!r}: re-initialising a backbone that holds transferred weights",
                          stacklevel=2)
            backbone.pretrained_cfg.pop("transfer")
        backbone.init_weights()
    fresh = backbone.fresh_prefixes()
    bn_names = {n for n, m in backbone.named_modules() if isinstance(m, _BatchNorm)}
    for p in model.parameters():
        p.requires_grad_(True)
    for name, p in backbone.named_parameters():
        if _is_copied(name, fresh):
            is_bn = name.rpartition(".")[0] in bn_names
            p.requires_grad_(spec.train_copied_bn_affine if is_bn else spec.train_copied_kernels)
    frozen = () if spec.update_copied_bn_stats else tuple(sorted(n for n in bn_names if _is_copied(n, fresh)))
    frozen = tuple(f"{prefix}.{n}" if prefix else n for n in frozen)
    model.__dict__.pop("train", None)  # the previous regime's rule, if any
    if frozen:
        model.train = _TrainKeepingBNFrozen(model, frozen)
    model.train(model.training)  # apply the BN modes now
    total, trainable = count_parameters(model)
    return RegimeSummary(spec.name, trainable, total, frozen)


def trainable_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Only the parameters that train: what the optimizer should receive."""
    return (p for p in model.parameters() if p.requires_grad)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def regime_summary(model: nn.Module) -> str:
    """One line: trainable / total parameters and frozen BN layers of `model` as it is now."""
    total, trainable = count_parameters(model)
    return str(RegimeSummary("current", trainable, total, frozen_bn_names(model)))
