"""Thin stateful `nn.Module` wrappers over `i2p.sparse.functional` (SparseTensor → SparseTensor)."""
from .activation import GELU, LeakyReLU, ReLU, SiLU, Elementwise, apply_to_feats
from .conv import Conv3d
from .norm import BatchNorm, SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["Conv3d", "BatchNorm", "SyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm",
           "ReLU", "LeakyReLU", "SiLU", "GELU", "Elementwise", "apply_to_feats"]
