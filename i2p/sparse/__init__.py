"""Sparse 3D convolution engine (PyTorch, CPU and CUDA, optional compiled CPU kernels), torchsparse semantics.

Semantics and conventions: docs/engine.md. The arithmetic of a conv runs on one of several
backends (`i2p`, `spconv`, `torchsparse`; `set_default_backend`, `set_backend`) over the
engine's own kernel maps, so outputs do not depend on the backend.
"""
from . import native
from .backends import BACKENDS, BackendName, backend_available, get_default_backend, set_default_backend
from .dense import to_dense
from .devoxelize import devoxelize
from .functional import conv3d
from .kmap import KernelMap, get_kernel_offsets
from .modules import (
                      GELU,
                      BatchNorm,
                      Conv3d,
                      Elementwise,
                      LeakyReLU,
                      ReLU,
                      SiLU,
                      SyncBatchNorm,
                      apply_to_feats,
                      convert_sync_batchnorm,
                      revert_sync_batchnorm,
                      set_backend,
)
from .ops import add, cat
from .pooling import MaxPool3d, global_avg_pool, global_max_pool, max_pool3d
from .quantize import sparse_collate, sparse_quantize
from .tensor import IntOr3, SparseCache, SparseTensor

__all__ = [
    "SparseTensor", "SparseCache", "IntOr3", "sparse_quantize", "sparse_collate",
    "Conv3d", "conv3d", "BatchNorm", "SyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm",
    "ReLU", "LeakyReLU", "SiLU", "GELU", "Elementwise", "apply_to_feats",
    "MaxPool3d", "max_pool3d", "global_avg_pool", "global_max_pool",
    "devoxelize", "to_dense", "cat", "add", "get_kernel_offsets", "KernelMap",
    "BACKENDS", "BackendName", "set_default_backend", "get_default_backend", "backend_available", "set_backend",
    "native",
]
