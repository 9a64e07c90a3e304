"""Sparse 3D backbones with timm's module names and interface (see resnet.py)."""
from .heads import HEADS, ClassifierHead
from .resnet import (
                     ARCHS,
                     STEMS,
                     BasicBlock,
                     Bottleneck,
                     SparseResNet,
                     create_sparse_resnet,
                     list_sparse_resnets,
                     resolve_arch,
)

__all__ = ["SparseResNet", "create_sparse_resnet", "BasicBlock", "Bottleneck", "ClassifierHead",
           "ARCHS", "STEMS", "HEADS", "list_sparse_resnets", "resolve_arch"]
