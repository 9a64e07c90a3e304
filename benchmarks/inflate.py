"""Figures for the inflation note: parameters per regime, cost of inflating ResNet-152, planar error.

    python benchmarks/inflate.py                 # everything
    python benchmarks/inflate.py --only counts   # counts | inflate | planar

Peak memory is the process's peak resident set size (each measurement runs in a fresh
subprocess, so peaks do not mix), reported with the baseline of the same process just before
the measured step. Random 2D weights: hub weights would change nothing here but the download.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def counts() -> None:
    import torch

    from models.backbones import create_sparse_resnet
    from models.finetune import REGIMES, apply_regime

    print("trainable / total parameters per regime (3 input channels, 40 classes, stem new, paper head)")
    for name in ("resnet18", "resnet50"):
        with torch.device("meta"):
            model = create_sparse_resnet(name, in_channels=3, num_classes=40)
            for regime in REGIMES:
                s = apply_regime(model, regime)
                print(f"  {name:<9} {regime:<8} {s.trainable:>12,} / {s.total:,}")


def _measure(step: str, name: str, mode: str) -> dict:
    """One measurement inside this (fresh) process."""
    import timm
    import torch

    torch.manual_seed(0)
    model_2d = timm.create_model(name, pretrained=False)
    sd = model_2d.state_dict()
    base = _rss_mib()
    t0 = time.perf_counter()
    if step == "state_dict":
        from i2p.inflate import InflateConfig, inflate_state_dict
        out = inflate_state_dict(sd, mode, "y", "repeat")
        n = sum(v.numel() for v in out.values())
    else:
        from models.backbones import create_sparse_resnet
        model = create_sparse_resnet(name, pretrained=model_2d, inflate=InflateConfig(kernel_mode=mode), num_classes=40)
        n = sum(p.numel() for p in model.parameters())
    return dict(step=step, name=name, mode=mode, seconds=time.perf_counter() - t0, numel=n,
                base_mib=base, peak_mib=_rss_mib(), params_2d=sum(v.numel() for v in sd.values()))


def inflate_cost(name: str = "resnet152") -> None:
    print(f"inflating {name} (random 2D weights; CPU, torch threads={__import__('torch').get_num_threads()})")
    for step in ("state_dict", "model"):
        for mode in ("copy", "center"):
            res = subprocess.run([sys.executable, __file__, "--measure", step, name, mode],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            what = "inflate_state_dict" if step == "state_dict" else "build 3D model + strict transfer"
            print(f"  {what:<34} {mode:<6} {r['seconds']:6.2f}s  peak RSS {r['peak_mib']:7.0f} MiB "
                  f"(+{r['peak_mib'] - r['base_mib']:.0f} over the 2D model loaded), "
                  f"{r['numel'] * 4 / 2**20:.0f} MiB of 3D tensors, {r['params_2d'] * 4 / 2**20:.0f} MiB 2D")


def planar(names=("resnet18", "resnet50", "resnext50_32x4d"), height: int = 32, width: int = 24) -> None:
    import torch

    from models.backbones.planar import build_planar_pair, planar_errors

    print(f"planar check: max |3D - 2D| / max |2D| per stage ({height}x{width} image, random weights "
          "with random BN statistics, stem inflate, point shortcuts, eval mode, float32)")
    torch.manual_seed(0)
    images = torch.randn(1, 3, height, width)
    for name in names:
        for mode in ("copy", "center"):
            m2 = None
            for axis in ("y", "z", "x"):
                m2, m3 = build_planar_pair(name, mode, axis, model_2d=m2, seed=0)
                rows = planar_errors(m3, m2, images, axis)
                errs = "  ".join(f"{r['stage']} {r['max_abs_err'] / r['max_abs_ref']:.1e}" for r in rows)
                print(f"  {name:<16} {mode:<6} depth {axis}: {errs}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("counts", "inflate", "planar"))
    p.add_argument("--model", default="resnet152", help="model for the inflation cost")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the planar check "
                   "(1 is much faster on a loaded machine)")
    p.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(_measure(*args.measure)))
        return
    if args.only in (None, "counts"):
        counts()
    if args.only in (None, "inflate"):
        inflate_cost(args.model)
    if args.only in (None, "planar"):
        planar()


if __name__ == "__main__":
    main()
