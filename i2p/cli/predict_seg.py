"""Per-point labels of point-cloud files from a ``PointSegmenter`` checkpoint.

``predict_segmentation(ckpt, inputs, out)`` reads each cloud with ``i2p.io.read_point_cloud``
(``.ply/.pcd/.npz/.npy/.txt``), voxelises it as the checkpoint's DataModule did (voxel size,
features, normalisation: the DataModule hyper-parameters Lightning stores in the checkpoint,
``datamodule_hyper_parameters``, as for classifiers; overridable), predicts a
class for **every point** and writes, for ``<stem>`` of each input, ``<out>/<stem>.labels.txt`` (one
class id a line, in the input's point order) and ``<out>/<stem>.ply`` (the points coloured by class).
Colours above 1 are read as 8-bit and divided by 255. ``i2p predict`` is the command line (it
hands segmentation checkpoints here).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2p.io import atomic_write_bytes, read_point_cloud, write_point_cloud

__all__ = ["predict_segmentation"]


def _data_settings(ckpt_path: Path) -> dict[str, Any]:
    """The recorded DataModule settings, read memory-mapped (no second full load of the weights)."""
    from i2p.checkpoint_file import peek_checkpoint

    return dict(peek_checkpoint(ckpt_path).get("datamodule_hyper_parameters") or {})


def predict_segmentation(ckpt_path: str | Path, inputs: Sequence[str | Path], out: str | Path,
                         voxel_size: float | None = None, features: str | None = None,
                         normalize: bool | None = None, category: int | None = None,
                         device: str = "cpu") -> list[dict[str, Any]]:
    """Label every point of each input; returns one record per input (paths written, class counts).

    ``category``: the shape's category id, for a part-segmentation checkpoint (ShapeNetPart).
    """
    from callbacks.wandb_media import palette
    from datamodules.segmentation import IGNORE_INDEX, SegmentationDataset, collate_segmentation
    from models.segmenter import PointSegmenter

    ckpt_path, out = Path(ckpt_path), Path(out)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    try:
        model = PointSegmenter.load_from_checkpoint(ckpt_path, map_location=device, pretrained=False)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{ckpt_path}: not a PointSegmenter checkpoint ({e})") from None
    model.eval().to(device)
    recorded = _data_settings(ckpt_path)
    settings = {"voxel_size": voxel_size or recorded.get("voxel_size"),
                "features": features or recorded.get("features"),
                "normalize": recorded.get("normalize", False) if normalize is None else normalize}
    missing = [k for k, v in settings.items() if v is None]
    if missing:
        raise ValueError(f"{ckpt_path} records no {missing} (a checkpoint written without a DataModule); pass them")
    if model.num_categories and category is None:
        raise ValueError(f"{ckpt_path} is a part-segmentation model ({model.num_categories} categories): pass "
                         "category (the shapes' category id)")

    def read(path: Path) -> dict:
        cloud = read_point_cloud(path)
        if "colors" in cloud and cloud["colors"].size and cloud["colors"].max() > 1.0:
            cloud["colors"] = cloud["colors"] / 255.0
        sample = {"points": cloud["points"], "label": np.full(len(cloud["points"]), IGNORE_INDEX, np.int64)}
        sample.update({k: cloud[k] for k in ("colors", "normals") if k in cloud})
        if category is not None:
            sample["category"] = int(category)
        return sample

    paths = [Path(p) for p in inputs]
    dataset = SegmentationDataset(paths, read=read, describe=str, features=settings["features"],
                                  voxel_size=float(settings["voxel_size"]), num_points=None,
                                  normalize=bool(settings["normalize"]), num_classes=model.num_classes,
                                  deterministic=True)
    colours = palette(model.num_classes).astype(np.float32) / 255.0
    records = []
    for i, path in enumerate(paths):
        batch = collate_segmentation([dataset[i]])
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
        with torch.no_grad():
            preds = model.segment(batch, "points")["preds"].cpu().numpy()
        labels_path, ply_path = out / f"{path.stem}.labels.txt", out / f"{path.stem}.ply"
        atomic_write_bytes(labels_path, ("\n".join(map(str, preds.tolist())) + "\n").encode())
        points = read_point_cloud(path)["points"]  # the input's own coordinates (not normalised)
        write_point_cloud(ply_path, points, colors=colours[preds])
        counts = np.bincount(preds, minlength=model.num_classes)
        records.append({"input": str(path), "labels": str(labels_path), "ply": str(ply_path), "points": len(preds),
                        "counts": counts.tolist()})
    return records

