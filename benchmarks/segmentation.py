"""Figures of the segmentation note (issue 10), on this CPU.

1. the parameter counts of the official preset (S3DIS: 6 inputs, 14 classes; SemanticKITTI: 4, 19),
   part by part, against the official SPVCNN18's 99,909,518 / 99,907,027 (encoder 34,342,144);
2. UNet forward + backward throughput (voxels/s) on an 80k-voxel lidar-like scan (the SemanticKITTI
   cap), regime ``all`` (every weight gradient), and the peak resident memory of that step; each
   preset runs in a fresh process so peaks do not mix;
3. test mIoU of FIP (io, iobn, all) against scratch on SyntheticRooms after the same number of
   epochs, several seeds (mean +- std), next to the majority-class baseline; the encoder is the
   ResNet-18 of ``i2p pretrain2d`` on generated images (the demos' checkpoint, cached).

    python benchmarks/segmentation.py                      # all three, ~10-15 min on 2 cores
    python benchmarks/segmentation.py --skip-speed --seeds 0 --epochs 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- 1. parameters
def parameter_counts() -> None:
    from models.backbones import SparseResUNet

    print("== official preset: parameters (SPVCNN18 of the official code: 99,909,518 with 6 inputs / 14 classes, "
          "99,907,027 with 4 / 19; encoder 34,342,144)")
    for name, cin, classes in (("S3DIS", 6, 14), ("SemanticKITTI", 4, 19)):
        with torch.device("meta"):
            net = SparseResUNet("resnet18", cin, classes, preset="official")
        parts = {"stem": net.stem, "down-sample": net.down, "encoder layer1-4": [getattr(net, n) for n in
                 net.stage_modules()], "decoder up1-4": [getattr(net, n) for n in net.decoder_modules()],
                 "head": net.head}
        counts = {k: sum(p.numel() for m in (v if isinstance(v, list) else [v]) for p in m.parameters())
                  for k, v in parts.items()}
        total = sum(p.numel() for p in net.parameters())
        print(f"  {name:<14} total {total:>11,}  " + "  ".join(f"{k} {v:,}" for k, v in counts.items()))


# ----------------------------------------------------------------------------- 2. speed and memory
def lidar_scan(num_voxels: int, voxel: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A ray-cast 64-beam scan of a street (ground, two facades, a few car-sized boxes), like a
    SemanticKITTI frame (~125k points), voxelised and capped at ``num_voxels`` voxels (a random subset,
    as the SemanticKITTI loader's cap): (coords [N, 3], a point per voxel [N, 3]).
    """
    from i2p.sparse import sparse_quantize

    rng = np.random.default_rng(seed)
    elev = np.radians(np.linspace(-24.8, 2.0, 64))[:, None]
    azim = np.linspace(-np.pi, np.pi, 2048, endpoint=False)[None, :]
    d = np.stack(np.broadcast_arrays(np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)), -1)
    d = d.reshape(-1, 3)
    far = np.full(len(d), 80.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d[:, 2] < 0, -1.73 / d[:, 2], np.inf)
        side = np.where(d[:, 1] >= 0, 7.5, -9.0)  # facades on both sides of the street
        t_wall = np.where(np.abs(d[:, 1]) > 1e-6, side / d[:, 1], np.inf)
    t = np.minimum(np.minimum(t_ground, np.where(t_wall > 0, t_wall, np.inf)), far)
    for _ in range(12):  # parked cars: axis-aligned boxes, slab test
        lo = np.array([rng.uniform(-40, 40), rng.choice([-6.5, 4.5]), -1.73])
        hi = lo + [4.2, 1.8, 1.5]
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - 0) / d, (hi - 0) / d
        tmin, tmax = np.nanmax(np.minimum(t1, t2), 1), np.nanmin(np.maximum(t1, t2), 1)
        hit = (tmax >= tmin) & (tmin > 0)
        t = np.where(hit & (tmin < t), tmin, t)
    keep = t < far
    pts = d[keep] * t[keep, None] + rng.normal(0, 0.02, (int(keep.sum()), 3))
    pts = torch.from_numpy(pts.astype(np.float32))
    coords, rep, _ = sparse_quantize(pts, voxel)
    if len(coords) < num_voxels:
        raise RuntimeError(f"scan has {len(coords)} voxels, fewer than {num_voxels}")
    keep_v = torch.from_numpy(np.sort(rng.choice(len(coords), num_voxels, replace=False)))
    return coords[keep_v], pts[rep[keep_v]]


def speed_child(preset: str, num_voxels: int, reps: int, threads: int) -> None:
    """Runs in a fresh process: prints one JSON line (seconds per step, voxels/s, peak RSS growth)."""
    from i2p.sparse import SparseTensor
    from models.backbones import SparseResUNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    coords, points = lidar_scan(num_voxels)
    net = SparseResUNet("resnet18", 4, 19, preset=preset).train()
    feats = torch.cat([points, torch.rand(len(points), 1)], 1)
    coords4 = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
    label = torch.randint(0, 19, (len(coords),))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(reps):
        x = SparseTensor(feats, coords4)  # a fresh batch: kernel maps are built every step, as in training
        start = time.perf_counter()
        logits = net(x, points, None, 0.05)
        torch.nn.functional.cross_entropy(logits, label).backward()
        times.append(time.perf_counter() - start)
        net.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = min(times)
    print(json.dumps({"preset": preset, "voxels": num_voxels, "threads": threads, "seconds": best,
                      "all_seconds": times, "voxels_per_s": num_voxels / best, "peak_mib": peak,
                      "growth_mib": peak - base,
                      "params": sum(p.numel() for p in net.parameters())}))


def speed(presets: list[str], num_voxels: int, reps: int, threads: int) -> None:
    print(f"== UNet forward + backward (regime all, trilinear head) on a {num_voxels:,}-voxel lidar-like scan, "
          f"{threads} thread(s), {platform.processor() or platform.machine()}")
    for preset in presets:
        cmd = [sys.executable, __file__, "--_speed-child", preset, str(num_voxels), str(reps), str(threads)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"  {preset}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {preset:<9} ({r['params']:,} parameters): {r['seconds']:.2f} s a step (best of {reps}: "
              f"{', '.join(f'{t:.2f}' for t in r['all_seconds'])}), {r['voxels_per_s']:,.0f} voxels/s; peak RSS "
              f"{r['peak_mib']:,.0f} MiB (+{r['growth_mib']:,.0f} MiB over the model and scan)")


# ----------------------------------------------------------------------------- 3. regimes
def regimes(names: list[str], seeds: list[int], epochs: int, preset: str, data_args: dict) -> None:
    import pytorch_lightning as pl

    from datamodules import SyntheticRooms
    from i2p.cli import pretrain2d
    from i2p.cli.demo_seg import majority_baseline
    from models import PointSegmenter

    ckpt, record = pretrain2d.run(pretrain2d.DEMO_ARGS)
    print(f"== test mIoU on SyntheticRooms after {epochs} epochs ({data_args['num_train']} training rooms, voxel "
          f"{data_args['voxel_size']}, preset {preset}), seeds {seeds}; encoder: the 2D ResNet-18 of "
          f"pretrain2d (val acc {record['val_acc']:.3f})")
    results: dict[str, list[float]] = {}
    for regime in names:
        for seed in seeds:
            pl.seed_everything(seed, verbose=False)
            dm = SyntheticRooms(seed=seed, **data_args)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = PointSegmenter(num_classes=dm.num_classes, in_channels=dm.in_channels, regime=regime,
                                       pretrained=str(ckpt) if regime != "scratch" else False, preset=preset,
                                       class_names=dm.class_names)
                trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                     limit_val_batches=0)
                start = time.perf_counter()
                trainer.fit(model, dm)
                miou = trainer.test(model, dm, verbose=False)[0]["test/miou"]
            results.setdefault(regime, []).append(miou)
            print(f"  {regime:<8} seed {seed}: test mIoU {miou:.4f} ({time.perf_counter() - start:.0f} s, "
                  f"{model.regime_summary.trainable:,} trainable)", flush=True)
    baseline = majority_baseline(SyntheticRooms(**data_args), "test")
    print(f"  majority-class baseline: mIoU {baseline['miou']:.4f}")
    for regime, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {regime:<8} mIoU {statistics.mean(values):.4f} +- {std:.4f} over {len(values)} seed(s)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_speed-child":
        speed_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-params", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-regimes", action="store_true")
    p.add_argument("--presets", nargs="+", default=["official", "light"], help="speed: UNet presets")
    p.add_argument("--voxels", type=int, default=80_000, help="speed: voxels of the scan")
    p.add_argument("--reps", type=int, default=2, help="speed: steps per preset (best reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--regimes", nargs="+", default=["io", "iobn", "all", "scratch"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--preset", default="light", help="regimes: UNet preset")
    p.add_argument("--num-train", type=int, default=16)
    p.add_argument("--voxel-size", type=float, default=0.2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_params:
        parameter_counts()
    if not args.skip_speed:
        speed(args.presets, args.voxels, args.reps, args.threads)
    if not args.skip_regimes:
        data = dict(num_train=args.num_train, num_val=4, num_test=8, room_size=(3.0, 4.5), density=60.0,
                    voxel_size=args.voxel_size, batch_size=4)
        regimes(args.regimes, args.seeds, args.epochs, args.preset, data)


if __name__ == "__main__":
    main()
