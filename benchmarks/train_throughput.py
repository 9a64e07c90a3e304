"""Training throughput (samples/s) of an inflated ResNet under FIP-IO vs FIP-ALL, per backend and precision.

ModelNet-sized batches: 32 shapes x 2048 points in the unit sphere, voxel 0.05, xyz features
(SyntheticShapes stands in for ModelNet40: same point count, normalisation and voxelisation).
Batches are collated once up front, so the figure is the model's forward + backward + SGD step,
not data loading; every step gets a new batch (new voxel counts, so nothing shape-keyed is reused
from the step before, as in training). FIP-IO still back-propagates through the frozen body to reach the new stem,
so its saving is the weight gradients and optimizer update of the frozen layers.

Side by side in one process, the configurations taking turns step by step (the machine's load
drifts between runs): `--impls auto loop`
compares the engine as it runs here (compiled kernels where they load) with its pure PyTorch
path (what `I2P_SPARSE_NATIVE=0` runs); `--precisions 32 bf16-mixed` adds autocast steps;
`--backends i2p spconv` the libraries (CUDA: `--device cuda`).

    python benchmarks/train_throughput.py [--regimes io all] [--iters 5] [--batch-size 32]
        [--impls auto loop] [--precisions 32 bf16-mixed] [--backends i2p] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@contextlib.contextmanager
def narrow_native() -> Iterator[None]:
    """The compiled kernels stop at NATIVE_MAX_CHANNELS on every variant (the AVX-512 one runs every width)."""
    from i2p.sparse.backends import i2p_backend

    saved, i2p_backend.WIDE_NATIVE_ISAS = i2p_backend.WIDE_NATIVE_ISAS, ()
    try:
        yield
    finally:
        i2p_backend.WIDE_NATIVE_ISAS = saved


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Runner:
    """One configuration (regime, impl, precision, backend): its own model and optimizer, timed step by step."""

    def __init__(self, regime: str, num_classes: int, backbone: str, impl: str = "auto", precision: str = "32",
                 backend: str = "i2p", device: str = "cpu") -> None:
        from i2p.sparse import set_backend
        from models import PointClassifier

        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # io without pretrained weights: fine for timing
            self.model = PointClassifier(backbone=backbone, num_classes=num_classes, regime=regime)
        set_backend(self.model, backend)
        self.model.to(device).train()
        self.opt = self.model.configure_optimizers()["optimizer"]
        self.dtype = PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(device.split(":")[0]) if self.dtype == torch.float16 else None
        self.cfg = {"regime": regime, "impl": impl, "precision": precision, "backend": backend, "device": device,
                    "trainable": self.model.regime_summary.trainable}
        self.times: list[float] = []
        self.loss = float("nan")

    def step(self, batch: dict, record: bool) -> None:
        from i2p.sparse.backends.i2p_backend import force_impl

        device = self.cfg["device"]
        x, label = batch["x"].to(device), batch["label"].to(device)
        impl = self.cfg["impl"]
        ctx = (contextlib.nullcontext() if impl == "auto" else narrow_native() if impl == "narrow"
               else force_impl(impl))
        with ctx:
            _sync(device)
            start = time.perf_counter()
            amp = self.dtype is not None
            with torch.autocast(device.split(":")[0], dtype=self.dtype or torch.float32, enabled=amp):
                _, logits = self.model.extract(x)
                loss = torch.nn.functional.cross_entropy(logits.float(), label)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            _sync(device)
        if record:
            self.times.append(time.perf_counter() - start)
        self.loss = loss.item()

    def result(self, batch_size: int) -> dict:
        median = sorted(self.times)[len(self.times) // 2]
        return dict(self.cfg, s_per_step=median, samples_per_s=batch_size / median, loss=self.loss)


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
    p.add_argument("--impls", nargs="+", default=["auto"], choices=["auto", "narrow", "native", "loop", "batched"],
                   help="i2p implementations: auto (what the engine picks), narrow = auto with the compiled "
                        "kernels stopping at 128 channels (is the AVX-512 variant's every-width rule right on this "
                        "CPU?), loop = the pure path")
    p.add_argument("--precisions", nargs="+", default=["32"], choices=list(PRECISIONS))
    p.add_argument("--backends", nargs="+", default=["i2p"], choices=["i2p", "spconv", "torchsparse", "auto"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from datamodules import SyntheticShapes
    from i2p.sparse import backend_available, native

    n = args.batch_size * (args.warmup + args.iters)  # a new batch every step, as in training
    dm = SyntheticShapes(num_train=n, num_val=2, num_test=2, points_per_shape=args.points, num_points=args.points,
                         voxel_size=args.voxel_size, batch_size=args.batch_size, drop_last=True)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    voxels = sum(b["x"].feats.shape[0] for b in batches) / len(batches)
    print(f"{args.backbone}, batch {args.batch_size} x {args.points} points, voxel {args.voxel_size}: "
          f"{voxels:.0f} voxels per batch; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}; "
          f"native: {native.status()}")
    print(f"{'regime':8} {'backend':12} {'impl':8} {'precision':10} {'trainable':>12} {'s/step':>8} {'samples/s':>10}")
    rows = []
    for regime in args.regimes:
        # the configurations of one regime take turns step by step, so a drifting machine load hits
        # them alike (a shared machine's load changes within seconds)
        runners = []
        for backend in args.backends:
            if not backend_available(backend):
                print(f"{regime:8} {backend:12} skipped: {backend} is not installed")
                continue
            for impl in (args.impls if backend == "i2p" else ["auto"]):
                for prec in args.precisions:
                    runners.append(Runner(regime, dm.num_classes, args.backbone, impl, prec, backend, args.device))
        failed: dict[int, str] = {}
        for i in range(args.warmup + args.iters):
            for j, r in enumerate(runners):
                if j in failed:
                    continue
                try:
                    r.step(batches[i % len(batches)], record=i >= args.warmup)
                except Exception as err:  # a backend without this precision: say so, go on
                    failed[j] = f"{type(err).__name__}: {err}"
        for j, r in enumerate(runners):
            c = r.cfg
            if j in failed:
                print(f"{regime:8} {c['backend']:12} {c['impl']:8} {c['precision']:10} failed: {failed[j][:100]}")
                rows.append(dict(c, error=failed[j]))
                continue
            res = r.result(len(batches[0]["label"]))
            rows.append(res)
            print(f"{regime:8} {c['backend']:12} {c['impl']:8} {c['precision']:10} {res['trainable']:>12,} "
                  f"{res['s_per_step']:>8.3f} {res['samples_per_s']:>10.1f}", flush=True)
        del runners
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"voxels_per_batch": voxels, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
