"""Point-cloud DataModules: voxelised, augmented, collated SparseTensor batches.

A config names a class as ``datamodules.ModelNet40``. Your own files in class folders need no
code (``datamodules.PointCloudFolder``); another format is one ``VoxelDataModule`` subclass
(docs/adding_a_dataset.md); per-point labels subclass ``SegmentationDataModule``
(docs/segmentation.md).
"""

from .base import VoxelDataModule
from .dataset import PointCloudDataset, collate_voxels
from .folder import PointCloudFolder
from .memory import ArrayDataModule
from .modelnet import ModelNet10, ModelNet40
from .rooms import SyntheticRooms
from .s3dis import S3DIS
from .scanobjectnn import ScanObjectNN
from .segmentation import SegmentationDataModule, collate_segmentation
from .semantic_kitti import SemanticKITTI
from .shapenet_part import ShapeNetPart
from .synthetic import SyntheticShapes

__all__ = [
    "VoxelDataModule",
    "ArrayDataModule",
    "PointCloudDataset",
    "collate_voxels",
    "PointCloudFolder",
    "SyntheticShapes",
    "ModelNet40",
    "ModelNet10",
    "ScanObjectNN",
    "SegmentationDataModule",
    "collate_segmentation",
    "SyntheticRooms",
    "S3DIS",
    "SemanticKITTI",
    "ShapeNetPart",
]
