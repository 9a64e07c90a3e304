"""Sparse 3D backbones with timm's module names and interface (resnet.py; the segmentation UNet, unet.py)."""
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
from .unet import DEVOXELIZE_MODES, UNET_PRESETS, SparseResUNet, UpBlock, create_sparse_resunet

__all__ = ["SparseResNet", "create_sparse_resnet", "BasicBlock", "Bottleneck", "ClassifierHead",
           "ARCHS", "STEMS", "HEADS", "list_sparse_resnets", "resolve_arch",
           "SparseResUNet", "create_sparse_resunet", "UpBlock", "UNET_PRESETS", "DEVOXELIZE_MODES"]
