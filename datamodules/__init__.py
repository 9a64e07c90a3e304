"""Point-cloud DataModules: voxelised, augmented, collated SparseTensor batches.

A config names a class as ``datamodules.ModelNet40``; a new data set is one
``VoxelDataModule`` subclass (see docs/adding_a_dataset.md).
"""

from .base import VoxelDataModule
from .dataset import PointCloudDataset, collate_voxels
from .memory import ArrayDataModule
from .modelnet import ModelNet10, ModelNet40
from .scanobjectnn import ScanObjectNN
from .synthetic import SyntheticShapes

__all__ = [
    "VoxelDataModule",
    "ArrayDataModule",
    "PointCloudDataset",
    "collate_voxels",
    "SyntheticShapes",
    "ModelNet40",
    "ModelNet10",
    "ScanObjectNN",
]
