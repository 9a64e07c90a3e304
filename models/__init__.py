"""LightningModules (``PointClassifier``; a ``PointSegmenter`` joins here) and their parts."""
from .classifier import PointClassifier
from .sync_batchnorm import SparseSyncBatchNorm

__all__ = ["PointClassifier", "SparseSyncBatchNorm"]
