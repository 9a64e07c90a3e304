"""Thin stateful `nn.Module` wrappers over `i2p.sparse.functional` (SparseTensor → SparseTensor)."""
from .activation import GELU, Elementwise, LeakyReLU, ReLU, SiLU, apply_to_feats
from .conv import Conv3d, set_backend
from .norm import BatchNorm, SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["Conv3d", "set_backend", "BatchNorm", "SyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm",
           "ReLU", "LeakyReLU", "SiLU", "GELU", "Elementwise", "apply_to_feats"]
