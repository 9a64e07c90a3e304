"""Stateless sparse operations (the modules in `i2p.sparse.modules` are thin wrappers)."""
from .conv import conv3d, sparse_matmul

__all__ = ["conv3d", "sparse_matmul"]
