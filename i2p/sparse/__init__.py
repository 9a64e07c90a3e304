"""Sparse 3D convolution engine (pure PyTorch, CPU and CUDA), torchsparse semantics.

Semantics: docs/engine.md.
"""
from .dense import to_dense
from .devoxelize import devoxelize
from .functional import conv3d
from .kmap import KernelMap, get_kernel_offsets
from .modules import (GELU, BatchNorm, Conv3d, Elementwise, LeakyReLU, ReLU, SiLU, SyncBatchNorm,
                      apply_to_feats, convert_sync_batchnorm, revert_sync_batchnorm)
from .ops import add, cat
from .pooling import MaxPool3d, global_avg_pool, global_max_pool, max_pool3d
from .quantize import sparse_collate, sparse_quantize
from .tensor import SparseCache, SparseTensor

__all__ = [
    "SparseTensor", "SparseCache", "sparse_quantize", "sparse_collate",
    "Conv3d", "conv3d", "BatchNorm", "SyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm",
    "ReLU", "LeakyReLU", "SiLU", "GELU", "Elementwise", "apply_to_feats",
    "MaxPool3d", "max_pool3d", "global_avg_pool", "global_max_pool",
    "devoxelize", "to_dense", "cat", "add", "get_kernel_offsets", "KernelMap",
]
