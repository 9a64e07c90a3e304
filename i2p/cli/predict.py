"""``i2p predict``: run a checkpoint on a user's files, one CSV row per file.

    i2p predict --ckpt_path runs/demo/checkpoints/last.ckpt --inputs scans/ [more.ply 'glob/*.off'] --out preds.csv

Inputs are files, folders (every readable file below them, sorted) or glob patterns, in any
format ``i2p.io.read_point_cloud`` reads (meshes are surface-sampled). The checkpoint is
self-contained: the model with its class names, and the preprocessing it was trained with
(voxel size, number of points, features, normalisation: the DataModule hyper-parameters Lightning
stores in it), so no config is needed. Each row: ``path, class, probability, top5`` (``name:p``
pairs, most likely first). A ``PointSegmenter`` checkpoint labels every point instead
(``i2p.cli.predict_seg.predict_segmentation``: ``<out>/<stem>.labels.txt`` and a coloured ``.ply``).
"""

from __future__ import annotations

import argparse
import csv
import glob
import importlib
import inspect
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from i2p.io import MESH_POINTS, POINT_CLOUD_SUFFIXES, atomic_write_bytes, read_point_cloud

__all__ = ["CLASSIFIER", "expand_inputs", "preprocessing_of", "predict_files", "write_predictions", "main"]

CLASSIFIER = "models.PointClassifier"


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files named, found under folders (recursively) or matched by glob patterns; sorted, no repeats."""
    found: dict[Path, None] = {}
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in POINT_CLOUD_SUFFIXES)
            if not matches:
                raise FileNotFoundError(f"--inputs {spec}: no {list(POINT_CLOUD_SUFFIXES)} files in this folder")
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"--inputs {spec}: no such file or folder, and no file matches it as a pattern")
        for m in matches:
            found.setdefault(m, None)
    return list(found)


def preprocessing_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The voxelisation settings a checkpoint was trained with (its DataModule hyper-parameters), with the
    ``VoxelDataModule`` defaults for any it does not record.
    """
    from datamodules.base import PREPROCESSING, VoxelDataModule

    defaults = {k: p.default for k, p in inspect.signature(VoxelDataModule.__init__).parameters.items()
                if k in PREPROCESSING}
    stored = ckpt.get("datamodule_hyper_parameters") or {}
    missing = [k for k in PREPROCESSING if k not in stored]
    if missing:
        print(f"[predict] the checkpoint records no {missing}: using the defaults "
              f"{ {k: defaults[k] for k in missing} }", file=sys.stderr)
    out = {k: stored.get(k, defaults[k]) for k in PREPROCESSING}
    out["mesh_points"] = int(stored.get("mesh_points") or MESH_POINTS)
    return out


def _module_class(ckpt: dict[str, Any]) -> str:
    """The LightningModule class path of a checkpoint (LightningCLI records it; plain Lightning does not)."""
    return str((ckpt.get("hyper_parameters") or {}).get("_class_path") or CLASSIFIER)


@torch.no_grad()
def predict_files(model: Any, files: Sequence[Path], prep: dict[str, Any], batch_size: int = 16,
                  top_k: int = 5, device: str = "cpu") -> list[dict[str, Any]]:
    """One prediction per file: dict(path, class, probability, top: [(name, p), ...])."""
    from torch.utils.data import DataLoader

    from datamodules import PointCloudDataset, collate_voxels
    from datamodules.transforms import RandomSubsample

    subsample = RandomSubsample(prep["num_points"]) if prep["num_points"] else None

    def read(path: Path) -> dict:
        """The file's points, subsampled with a fixed seed: a file's prediction never depends on the others."""
        cloud = {**read_point_cloud(path, mesh_points=prep["mesh_points"], seed=0), "label": 0}
        return subsample(cloud, np.random.default_rng(0)) if subsample is not None else cloud

    dataset = PointCloudDataset(list(files), read=read, describe=str, transform=None,
                                voxel_size=prep["voxel_size"], num_points=None,
                                features=prep["features"], normalize=prep["normalize"], deterministic=True)
    names = list(model.class_names or [f"class{i:02d}" for i in range(model.num_classes)])
    k = max(1, min(top_k, len(names)))
    rows: list[dict[str, Any]] = []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_voxels):
        probs = torch.softmax(model(batch["x"].to(device)).float(), dim=1).cpu()
        top_p, top_i = probs.topk(k, dim=1)
        for index, p, i in zip(batch["index"].tolist(), top_p.tolist(), top_i.tolist()):
            rows.append({"path": str(files[index]), "class": names[i[0]], "probability": p[0],
                         "top": [(names[c], q) for c, q in zip(i, p)]})
    return rows


def write_predictions(rows: Sequence[dict[str, Any]], out: str) -> None:
    """CSV ``path,class,probability,top5`` (atomically; ``-`` writes to stdout)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "class", "probability", "top5"])
    for r in rows:
        writer.writerow([r["path"], r["class"], f"{r['probability']:.6f}",
                         " ".join(f"{name}:{p:.4f}" for name, p in r["top"])])
    if out == "-":
        sys.stdout.write(buf.getvalue())
    else:
        atomic_write_bytes(out, buf.getvalue().encode())


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p predict", description="Classify point-cloud and mesh files with an i2p "
                                "checkpoint: one CSV row per file (path, class, probability, top-k).",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="The preprocessing and class names come from the checkpoint.")
    p.add_argument("--ckpt_path", required=True, help="a Lightning checkpoint of i2p fit (best-*.ckpt, last.ckpt)")
    p.add_argument("--inputs", required=True, nargs="+", help="files, folders or glob patterns (quote them)")
    p.add_argument("--out", default=None, help="classifier: the CSV to write ('-': stdout; default predictions.csv); "
                   "segmenter: the folder for <stem>.labels.txt and <stem>.ply (default predictions/)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--top_k", type=int, default=5, help="classes listed per file (default %(default)s)")
    p.add_argument("--category", type=int, default=None, help="part segmentation: the shapes' category id")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default)")
    return p


def main(argv: Sequence[str] = ()) -> int:
    args = build_parser().parse_args(list(argv))
    if not os.path.isfile(args.ckpt_path):
        raise SystemExit(f"i2p predict: --ckpt_path {args.ckpt_path}: no such checkpoint file")
    from i2p.checkpoint_file import peek_checkpoint

    ckpt = peek_checkpoint(args.ckpt_path)
    class_path = _module_class(ckpt)
    try:
        files = expand_inputs(args.inputs)
    except FileNotFoundError as e:
        raise SystemExit(f"i2p predict: {e}") from None
    module_name, _, cls_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    from models import PointClassifier

    if not issubclass(cls, PointClassifier):  # models.PointSegmenter: a label for every point
        from i2p.cli.predict_seg import predict_segmentation

        out = args.out or "predictions"
        try:
            records = predict_segmentation(args.ckpt_path, files, out, category=args.category,
                                           device=_device(args.device))
        except (ValueError, OSError) as e:
            raise SystemExit(f"i2p predict: {e}") from None
        for r in records:
            print(f"[predict] {r['input']}: {r['points']} points -> {r['labels']}, {r['ply']}")
        return 0
    device = _device(args.device)
    model = cls.load_from_checkpoint(args.ckpt_path, map_location=device).eval()
    prep = preprocessing_of(ckpt)
    try:
        rows = predict_files(model, files, prep, args.batch_size, args.top_k, device)
    except (ValueError, OSError) as e:  # a bad file: its name, the field, what was expected; nothing written
        raise SystemExit(f"i2p predict: {e}") from None
    out = args.out or "predictions.csv"
    write_predictions(rows, out)
    if out != "-":
        shown = "; ".join(f"{Path(r['path']).name}: {r['class']} ({r['probability']:.2f})" for r in rows[:3])
        more = f"; ... ({len(rows)} in all)" if len(rows) > 3 else ""
        print(f"[predict] {len(rows)} file(s) -> {out}  [{shown}{more}]  voxel {prep['voxel_size']}, "
              f"{prep['num_points']} points, features {prep['features']}")
    return 0
