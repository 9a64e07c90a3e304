"""Training throughput (samples/s) of an inflated ResNet under FIP-IO vs FIP-ALL (and scratch).

ModelNet-sized batches: 32 shapes x 2048 points in the unit sphere, voxel 0.05, xyz features
(SyntheticShapes stands in for ModelNet40: same point count, normalisation and voxelisation).
Batches are collated once up front, so the figure is the model's forward + backward + SGD step,
not data loading. FIP-IO still back-propagates through the frozen body to reach the new stem,
so its saving is the weight gradients and optimizer update of the frozen layers.

    python benchmarks/train_throughput.py [--regimes io all] [--iters 5] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch


def measure(regime: str, batches: list, num_classes: int, backbone: str, iters: int, warmup: int) -> dict:
    from models import PointClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # io without pretrained weights: fine for timing
        model = PointClassifier(backbone=backbone, num_classes=num_classes, regime=regime)
    model.train()
    opt = model.configure_optimizers()["optimizer"]
    times = []
    for i in range(warmup + iters):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        _, logits = model.extract(batch["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    bs = len(batches[0]["label"])
    median = sorted(times)[len(times) // 2]
    return {"regime": regime, "trainable": model.regime_summary.trainable, "s_per_step": median,
            "samples_per_s": bs / median}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--regimes", nargs="+", default=["io", "all"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from datamodules import SyntheticShapes

    n = args.batch_size * 2
    dm = SyntheticShapes(num_train=n, num_val=2, num_test=2, points_per_shape=args.points, num_points=args.points,
                         voxel_size=args.voxel_size, batch_size=args.batch_size, drop_last=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    voxels = sum(b["x"].feats.shape[0] for b in batches) / len(batches)
    print(f"{args.backbone}, batch {args.batch_size} x {args.points} points, voxel {args.voxel_size}: "
          f"{voxels:.0f} voxels per batch; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'regime':8} {'trainable':>12} {'s/step':>8} {'samples/s':>10}")
    for regime in args.regimes:
        r = measure(regime, batches, dm.num_classes, args.backbone, args.iters, args.warmup)
        print(f"{r['regime']:8} {r['trainable']:>12,} {r['s_per_step']:>8.2f} {r['samples_per_s']:>10.1f}")


if __name__ == "__main__":
    main()
