"""Optimizer and learning-rate schedule builders shared by the LightningModules.

Kept as plain functions (no Lightning) so a classifier and a segmenter build the
same SGD/AdamW + cosine/poly recipes from a handful of hyper-parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "lr_factor", "build_scheduler"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "poly", "none")


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
) -> Optimizer:
    """SGD with the paper's defaults (lr 0.1, momentum 0.9, wd 1e-4) or AdamW."""
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters: check the fine-tuning regime")
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def lr_factor(epoch: int, name: str, max_epochs: int, warmup_epochs: int = 0, power: float = 0.9) -> float:
    """Multiplier of the base learning rate at the start of ``epoch`` (0-based).

    Linear warm-up over ``warmup_epochs`` (reaching the base rate at the first epoch after it),
    then cosine to zero or polynomial decay over the remaining epochs.
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    if name == "none":
        return 1.0
    span = max(1, max_epochs - warmup_epochs)
    t = min(1.0, (epoch - warmup_epochs) / span)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if name == "poly":
        return (1.0 - t) ** power
    raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")


def build_scheduler(
    optimizer: Optimizer,
    name: str = "cosine",
    max_epochs: int = 100,
    warmup_epochs: int = 0,
    power: float = 0.9,
) -> LambdaLR | None:
    """A per-epoch LambdaLR for ``name``; None when there is neither schedule nor warm-up."""
    name = name.lower()
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
    if name == "none" and warmup_epochs <= 0:
        return None
    return LambdaLR(optimizer, lambda e: lr_factor(e, name, max_epochs, warmup_epochs, power))
