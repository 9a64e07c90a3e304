"""The paper's optimizer and learning-rate recipes, built from torch's own classes.

SGD (lr 0.1, momentum 0.9, weight decay 1e-4) or AdamW; a per-epoch schedule: optional linear
warm-up (``LinearLR``) then cosine to zero (``CosineAnnealingLR``) or polynomial decay
(``PolynomialLR``), chained by ``SequentialLR``. Plain functions (no Lightning), so a classifier
and a segmenter build the same recipes from a handful of hyper-parameters. ``lr_factor`` is the
closed form of the same schedule, the reference the tests hold torch's chain to.

Any other torch optimizer or scheduler: LightningCLI's ``--optimizer`` / ``--lr_scheduler``
(README, section Training), which replace these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, get_args

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, PolynomialLR, SequentialLR

__all__ = ["OptimizerName", "SchedulerName", "OPTIMIZERS", "SCHEDULERS", "build_optimizer", "lr_factor",
           "build_scheduler", "optimizers_from_hparams"]

OptimizerName = Literal["sgd", "adamw"]
SchedulerName = Literal["cosine", "poly", "none"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: OptimizerName = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
) -> Optimizer:
    """``torch.optim.SGD`` with the paper's defaults (lr 0.1, momentum 0.9, wd 1e-4) or ``AdamW``."""
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
    """Multiplier of the base learning rate during ``epoch`` (0-based): the closed form of ``build_scheduler``.

    Linear warm-up over ``warmup_epochs`` (reaching the base rate at the first epoch after it),
    then cosine to zero or polynomial decay over the remaining epochs.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    if name == "none":
        return 1.0
    t = min(1.0, (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs))
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** power


def build_scheduler(
    optimizer: Optimizer,
    name: SchedulerName = "cosine",
    max_epochs: int = 100,
    warmup_epochs: int = 0,
    power: float = 0.9,
) -> LRScheduler | None:
    """The per-epoch schedule of ``name`` from torch's schedulers; None when there is neither a schedule
    nor a warm-up.
    """
    name = name.lower()
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}")
    span = max(1, max_epochs - warmup_epochs)
    main: LRScheduler | None = None
    if name == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=span, eta_min=0.0)
    elif name == "poly":
        main = PolynomialLR(optimizer, total_iters=span, power=power)
    if warmup_epochs <= 0:
        return main
    w = warmup_epochs
    warmup = LinearLR(optimizer, start_factor=1 / (w + 1), end_factor=w / (w + 1), total_iters=max(1, w - 1))
    if main is None:  # warm-up, then the base rate
        main = LinearLR(optimizer, start_factor=1.0, end_factor=1.0, total_iters=1)
    return SequentialLR(optimizer, [warmup, main], milestones=[w])


def optimizers_from_hparams(params: Iterable[torch.nn.Parameter], hp: Any, max_epochs: int | None) -> Any:
    """What ``configure_optimizers`` returns for a module with the recipe's hyper-parameters (``optimizer``,
    ``lr``, ``momentum``, ``weight_decay``, ``nesterov``, ``scheduler``, ``warmup_epochs``, ``poly_power``):
    the optimizer, plus the per-epoch schedule over ``max_epochs`` (100 when the trainer sets no finite one).
    """
    opt = build_optimizer(params, hp.optimizer, hp.lr, hp.momentum, hp.weight_decay, hp.nesterov)
    if not max_epochs or max_epochs < 0:
        max_epochs = 100
    sched = build_scheduler(opt, hp.scheduler, max_epochs, hp.warmup_epochs, hp.poly_power)
    if sched is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
