"""Neural collapse over epochs, FIP-IO vs scratch on the synthetic shapes, and what the
NeuralCollapse callback costs per epoch (its own time / the whole epoch incl. validation).

    python benchmarks/collapse_overhead.py --epochs 6 --regimes io scratch
    python benchmarks/collapse_overhead.py --stand-in      # overhead only, dense toy model

Prints one row per (regime, epoch) and writes the rows as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

from callbacks import NeuralCollapse

PRETRAINED = ".cache/i2p/pretrain2d/resnet18_shapes2d_32px.pth"


class EpochClock(pl.Callback):
    """Wall time of each epoch, from its start to after every earlier callback's epoch end."""

    def __init__(self) -> None:
        self.t0, self.rows = 0.0, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.rows.append({"epoch": trainer.current_epoch, "epoch_s": time.perf_counter() - self.t0, **m})


def build(regime: str, args: argparse.Namespace):
    if args.stand_in:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from test_callbacks_helpers import ToyClassifier, ToyData

        return ToyClassifier(), ToyData(n_train=args.num_train, n_val=args.num_val)
    from datamodules import SyntheticShapes
    from models import PointClassifier

    data = SyntheticShapes(
        num_train=args.num_train, num_val=args.num_val, num_test=args.num_val, points_per_shape=1024,
        num_points=1024, voxel_size=0.1, batch_size=16, seed=0,
    )  # fmt: skip
    if regime != "scratch" and not os.path.exists(args.pretrained):
        from i2p.cli import pretrain2d

        pretrain2d.main([])
    model = PointClassifier(
        backbone="resnet18", num_classes=data.num_classes, class_names=data.class_names, regime=regime,
        pretrained=False if regime == "scratch" else args.pretrained, lr=0.1, scheduler="cosine",
    )  # fmt: skip
    return model, data


def at_init(model, data) -> dict[str, float]:
    """NC1 / NCC mismatch of the untrained model (eval mode): the starting point of the curves."""
    import torch

    from i2p.collapse import CollapseStats

    data.setup("fit")
    model.eval()
    out = {}
    for split, loader in (("train", data.train_eval_dataloader()), ("val", data.val_dataloader())):
        stats = CollapseStats(model.num_classes)
        with torch.no_grad():
            for batch in loader:
                f, logits = model.extract(batch["x"])
                stats.update(f, batch["label"], logits.argmax(-1))
        r = stats.compute()
        out.update({f"nc/{split}/nc1": r["nc1"], f"nc/{split}/ncc_mismatch": r["ncc_mismatch"]})
    model.train()
    return out


def plot(rows: list[dict], path: str) -> None:
    """NC1 and NCC mismatch (train and val) per epoch, one line per regime; epoch -1 = init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    keys = ["nc/train/nc1", "nc/val/nc1", "nc/train/ncc_mismatch", "nc/val/ncc_mismatch"]
    for ax, key in zip(axes, keys):
        for regime in dict.fromkeys(r["regime"] for r in rows):
            pts = [(r["epoch"], r[key]) for r in rows if r["regime"] == regime and key in r]
            ax.plot(*zip(*pts), marker="o", label=regime)
        ax.set_title(key)
        ax.set_xlabel("epoch (-1 = before training)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--regimes", nargs="+", default=["io", "scratch"])
    p.add_argument("--num-train", type=int, default=360)
    p.add_argument("--num-val", type=int, default=120)
    p.add_argument("--pretrained", default=PRETRAINED)
    p.add_argument("--stand-in", action="store_true", help="dense toy model: overhead only")
    p.add_argument("--out", default="runs/collapse_overhead.json")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a loaded box)")
    p.add_argument("--from-json", nargs="+", help="only re-plot earlier --out files")
    args = p.parse_args()
    if args.from_json:
        rows = [r for f in args.from_json for r in json.loads(Path(f).read_text())]
        plot(rows, str(Path(args.out).with_suffix(".png")))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'regime':8} ep  val/acc  nc1(tr)   ncc_mm(tr)  nc1(val)  ncc_mm(val)  epoch_s  nc_s  overhead")
    for regime in ["stand-in"] if args.stand_in else args.regimes:
        pl.seed_everything(0, verbose=False)
        model, data = build(regime, args)
        nc, clock = NeuralCollapse(plot=False), EpochClock()
        clock.rows.append({"epoch": -1, "epoch_s": float("nan"), **at_init(model, data)})
        trainer = pl.Trainer(
            accelerator="auto", devices=1, max_epochs=args.epochs, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            callbacks=[nc, clock], default_root_dir="runs/collapse_overhead",
        )  # fmt: skip
        trainer.fit(model, data)
        for r in clock.rows:
            r.update(regime=regime, nc_s=nc.seconds.get(r["epoch"], float("nan")))
            r["overhead"] = r["nc_s"] / r["epoch_s"]
            rows.append(r)
            print(
                f"{regime:8} {r['epoch']:2d}  {r.get('val/acc', float('nan')):.3f}    "
                f"{r.get('nc/train/nc1', float('nan')):8.3f}  {r.get('nc/train/ncc_mismatch', float('nan')):8.3f}    "
                f"{r.get('nc/val/nc1', float('nan')):8.3f}  {r.get('nc/val/ncc_mismatch', float('nan')):8.3f}     "
                f"{r['epoch_s']:6.1f}  {r['nc_s']:5.2f}  {100 * r['overhead']:5.1f} %",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    plot(rows, str(Path(args.out).with_suffix(".png")))


if __name__ == "__main__":
    main()
