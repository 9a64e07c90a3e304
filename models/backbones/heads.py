"""Classifier heads on pooled backbone features `[B, num_features]`.

The paper's head is Linear -> BatchNorm1d *on the logits* (the official code's choice, kept so
parameter counts and FIP-IO match); an MLP head is offered as a fair alternative. The last Linear
is always `fc`, so `head.fc.weight` is the classifier weight (neural-collapse NC3 reads it).
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

__all__ = ["HeadKind", "HEADS", "ClassifierHead"]

HeadKind = Literal["linear_bn", "mlp", "linear"]
HEADS: tuple[str, ...] = get_args(HeadKind)


class ClassifierHead(nn.Module):
    """`pre` (MLP hidden layer or identity) -> dropout -> `fc` -> `norm` (BN1d on logits or identity).

    `num_classes=0` makes the head an identity (timm's convention for feature extractors).
    Note: BatchNorm1d on the logits needs more than one sample per batch in training.
    """

    def __init__(self, in_features: int, num_classes: int, kind: HeadKind = "linear_bn",
                 hidden: int = 512, drop_rate: float = 0.0) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        self.kind, self.num_classes = kind, num_classes
        self.pre: nn.Module = nn.Identity()
        width = in_features
        if kind == "mlp" and num_classes > 0:
            self.pre = nn.Sequential(nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden),
                                     nn.ReLU(inplace=True))
            width = hidden
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc: nn.Module = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        use_bn = kind == "linear_bn" and num_classes > 0
        self.norm: nn.Module = nn.BatchNorm1d(num_classes) if use_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(self.drop(self.pre(x))))
