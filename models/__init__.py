"""LightningModules (``PointClassifier``, ``PointSegmenter``) and their parts."""
from .classifier import PointClassifier
from .segmenter import PointSegmenter
from .sync_batchnorm import SparseSyncBatchNorm

__all__ = ["PointClassifier", "PointSegmenter", "SparseSyncBatchNorm"]
