"""``i2p inflate``: write a 3D sparse checkpoint from 2D weights, or ``--verify`` the inflation.

    i2p inflate --model resnet50 --weights pretrained --out resnet50_3d.pth
    i2p inflate --model resnet50 --weights runs/r50_2d.pth --depth-axis z --out r50_3d.safetensors
    i2p inflate --model resnet50 --verify [--weights ...] [--kernel-mode center] [--depth-axis all]

The checkpoint holds the 3D model's transferred tensors (not the fresh stem/head) and, under
``i2p_inflate``, the settings it was made with (model, kernel mode, depth axis, shortcut, stem,
...); ``create_sparse_resnet(name, pretrained=FILE)`` loads it as is and refuses other inflation
settings. ``--verify`` lays a random image flat in 3D and prints, per stage, the largest
difference to the 2D timm model (stem ``inflate`` and ``point`` shortcuts, the settings under
which the two must agree).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from i2p.inflate import DEPTH_AXES, KERNEL_MODES, SHORTCUTS, InflateConfig, normalize_depth_axis
from models.backbones import ARCHS, HEADS, STEMS

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="i2p inflate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help=f"{', '.join(ARCHS)} (a timm tag like resnet50.a1_in1k picks "
                   "hub weights)")
    p.add_argument("--weights", default="none", help="'pretrained' (timm hub), 'timm:<name>', a .pth/.pt/"
                   ".safetensors file, or 'none' (random 2D weights, --verify only)")
    p.add_argument("--out", default=None, help="3D checkpoint to write (.pth/.pt or .safetensors)")
    p.add_argument("--kernel-mode", default="copy", choices=KERNEL_MODES)
    p.add_argument("--depth-axis", default="y", help="x, y, z or the official names x-axis/y-axis/z-axis "
                   "(official z-axis = depth y); with --verify also 'all'")
    p.add_argument("--shortcut", default="repeat", choices=SHORTCUTS)
    p.add_argument("--stem", default="new", choices=STEMS)
    p.add_argument("--head", default="linear_bn", choices=HEADS)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=40)
    p.add_argument("--verify", action="store_true", help="run the planar check instead of writing")
    p.add_argument("--height", type=int, default=32, help="--verify image height")
    p.add_argument("--width", type=int, default=24, help="--verify image width")
    p.add_argument("--tolerance", type=float, default=1e-4, help="--verify: largest relative error allowed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list-keys", action="store_true", help="print every key used, dropped and left fresh")
    return p


def _weights_source(weights: str) -> Any:
    """CLI string -> `create_sparse_resnet`'s `pretrained` argument."""
    w = weights.strip()
    if w.lower() in ("none", "", "false"):
        return False
    if w.lower() in ("pretrained", "true", "timm"):
        return True
    if w.startswith("timm:"):
        return w
    if not Path(w).is_file():
        raise SystemExit(f"i2p inflate: --weights {w!r} is neither 'pretrained', 'timm:<name>', 'none' "
                         "nor an existing file")
    return w


def write(args: argparse.Namespace) -> int:
    from models.backbones import create_sparse_resnet
    from models.weights import save_inflated

    source = _weights_source(args.weights)
    if source is False:
        raise SystemExit("i2p inflate: --out needs --weights (pretrained, timm:<name> or a file)")
    t0 = time.perf_counter()
    inflate = InflateConfig(args.kernel_mode, args.depth_axis, args.shortcut)
    model = create_sparse_resnet(args.model, pretrained=source, inflate=inflate, stem=args.stem,
                                 in_channels=args.in_channels, num_classes=args.num_classes, head=args.head)
    report = model.pretrained_cfg["transfer"]
    out = Path(args.out)
    save_inflated(model, out, model=args.model, stem=args.stem, head=args.head, in_channels=args.in_channels,
                  num_classes=args.num_classes, source=report.source, used=len(report.used),
                  dropped=report.dropped, timm_version=__import__("timm").__version__)
    print(report.details() if args.list_keys else str(report))
    print(f"wrote {out} ({len(report.used)} tensors, {out.stat().st_size / 2**20:.1f} MiB) in "
          f"{time.perf_counter() - t0:.1f}s")
    return 0


def _model_2d(args: argparse.Namespace) -> Any:
    """The 2D timm model whose feature maps the 3D one must reproduce (None: random, see planar)."""
    import timm

    from models.weights import load_2d_state_dict

    source = _weights_source(args.weights)
    if source is False:
        return None
    if source is True or isinstance(source, str) and source.startswith("timm:"):
        name = source[len("timm:"):] if isinstance(source, str) else args.model
        return timm.create_model(name, pretrained=True)
    state, meta, _ = load_2d_state_dict(source)
    if meta is not None:
        raise SystemExit("i2p inflate --verify needs 2D weights, got an i2p 3D checkpoint")
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 0
    model = timm.create_model(args.model.partition(".")[0], pretrained=False, num_classes=num_classes)
    model.load_state_dict(state)
    return model


def verify(args: argparse.Namespace) -> int:
    from models.backbones.planar import build_planar_pair, planar_errors

    axes = list(DEPTH_AXES) if args.depth_axis == "all" else [normalize_depth_axis(args.depth_axis)]
    if args.kernel_mode == "inflate":
        print("note: kernel mode 'inflate' divides kernels by their depth; planar equality is not expected")
    model_2d = _model_2d(args)
    torch.manual_seed(args.seed)
    images = torch.randn(1, 3, args.height, args.width)
    worst = 0.0
    for axis in axes:
        t0 = time.perf_counter()
        m2, m3 = build_planar_pair(args.model, args.kernel_mode, axis, model_2d=model_2d, seed=args.seed)
        model_2d = m2  # reuse the same random 2D model across axes
        rows = planar_errors(m3, m2, images, axis)
        print(f"{args.model} kernel={args.kernel_mode} depth_axis={axis} image={args.height}x{args.width} "
              f"({time.perf_counter() - t0:.1f}s)")
        print(f"  {'stage':<7} {'2D shape':<20} {'max |err|':>10} {'max |ref|':>10} {'relative':>10}")
        for r in rows:
            rel = r["max_abs_err"] / max(r["max_abs_ref"], 1e-12)
            worst = max(worst, rel)
            print(f"  {r['stage']:<7} {str(r['shape']):<20} {r['max_abs_err']:>10.2e} "
                  f"{r['max_abs_ref']:>10.2e} {rel:>10.2e}")
    ok = worst <= args.tolerance
    print(f"{'PASS' if ok else 'FAIL'}: largest relative error {worst:.2e} (tolerance {args.tolerance:.0e})")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.verify:
        return verify(args)
    if not args.out:
        raise SystemExit("i2p inflate: give --out FILE (or --verify)")
    return write(args)


if __name__ == "__main__":
    sys.exit(main())
