"""LightningModules (``PointClassifier``; a ``PointSegmenter`` joins here) and their parts."""
from .classifier import PointClassifier

__all__ = ["PointClassifier"]
