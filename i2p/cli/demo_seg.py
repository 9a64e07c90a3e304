"""``i2p demo --task seg``: Image2Point segmentation offline, in a few CPU minutes.

1. ``i2p pretrain2d`` trains a ResNet-18 on generated 2D images (the classification demo's run,
   cached, so the two demos share it);
2. ``i2p fit --config configs/experiments/demo_seg.yaml`` inflates it into the encoder of the
   segmentation UNet and finetunes on generated furnished rooms (``SyntheticRooms``), W&B offline
   without a key;
3. the best checkpoint is tested on every point of the test rooms, and its mIoU is printed
   against the majority-class baseline (the training set's most frequent class everywhere).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from i2p.cli.configs import find_config
from i2p.cli.pretrain2d import demo_weights  # one cached 2D checkpoint serves both demos

__all__ = ["majority_baseline", "run"]


def majority_baseline(datamodule: Any, split: str = "test") -> dict[str, Any]:
    """Scores of predicting the training set's most frequent class at every point of ``split``."""
    from models.metrics import segmentation_scores

    n, ignore = datamodule.num_classes, datamodule.ignore_index

    def counts(which: str) -> torch.Tensor:
        total = torch.zeros(n, dtype=torch.long)
        for item in datamodule.items(which):
            label = np.asarray(datamodule.read_sample(item)["label"])
            label = label[(label != ignore) & (label >= 0)]
            total += torch.bincount(torch.from_numpy(label.astype(np.int64)), minlength=n)
        return total

    majority = int(counts("train").argmax())
    confusion = torch.zeros(n, n, dtype=torch.long)
    confusion[:, majority] = counts(split)
    return {"class": majority, **segmentation_scores(confusion)}


def run(argv: Sequence[str] = ()) -> int:
    """The segmentation demo; ``argv`` as ``i2p demo --task seg`` takes it (other arguments go to ``i2p fit``)."""
    parser = argparse.ArgumentParser(
        prog="i2p demo --task seg", description=__doc__.splitlines()[0],
        epilog="Other arguments go to `i2p fit`, e.g. --trainer.max_epochs 1.",
    )
    parser.add_argument("--config", default="demo_seg.yaml", help="fit config (default: the shipped "
                        "configs/experiments/demo_seg.yaml)")
    parser.add_argument("--pretrained", default=None, help="use this 2D checkpoint instead of pretrain2d")
    args, fit_overrides = parser.parse_known_args(list(argv))

    from i2p.cli.lightning import run_lightning  # heavy imports after --help

    start = time.time()
    pretrained = demo_weights(args.pretrained, "[demo-seg]")
    try:
        config = find_config(args.config)
    except FileNotFoundError as err:
        raise SystemExit(f"i2p demo --task seg: {err}") from None
    cli = run_lightning(["fit", "--config", str(config), "--model.init_args.pretrained", pretrained, *fit_overrides])
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or None
    results = trainer.test(model, datamodule=data, ckpt_path=best or None)
    metrics = results[0] if results else {}
    baseline = majority_baseline(data, "test")

    run_dir = getattr(trainer.logger, "run_dir", None) if trainer.logger is not None else None
    import wandb

    offline = bool(getattr(trainer.logger, "_offline", False))
    miou = metrics.get("test/miou", float("nan"))
    if wandb.run is not None:
        wandb.run.summary.update({"demo/wall_seconds": time.time() - start, "demo/pretrained_2d": pretrained,
                                  "demo/majority_miou": baseline["miou"], "demo/majority_oacc": baseline["oacc"]})
        wandb.finish()
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    iou = model.scores.get("test", {}).get("iou")
    print("\n[demo-seg] -----------------------------------------------------------")
    print(f"[demo-seg] FIP (regime {model.hparams.regime}) UNet on SyntheticRooms ({model.num_classes} classes), "
          f"scored on every test point")
    print(f"[demo-seg] {model.regime_summary}")
    print(f"[demo-seg] test mIoU {miou:.4f}  (majority-class baseline '{names[baseline['class']]}': "
          f"{baseline['miou']:.4f}, {miou / max(baseline['miou'], 1e-12):.1f}x)")
    print(f"[demo-seg] test overall accuracy {metrics.get('test/oacc', float('nan')):.4f} (baseline "
          f"{baseline['oacc']:.4f}), mean class accuracy {metrics.get('test/macc', float('nan')):.4f}")
    if iou is not None:
        print("[demo-seg] per-class IoU: " + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, iou.tolist()) if v == v))
    print(f"[demo-seg] checkpoints: best {best}  last {getattr(ckpt_cb, 'last_model_path', None)}")
    if run_dir:
        hint = f"  (upload later: wandb sync {run_dir})" if offline else ""
        print(f"[demo-seg] W&B run ({'offline' if offline else 'online'}): {run_dir}{hint}")
    print(f"[demo-seg] wall time {time.time() - start:.0f} s")
    return 0
