"""``i2p demo``: the whole Image2Point story offline, in a few CPU minutes.

1. ``i2p pretrain2d`` trains a ResNet-18 on generated 2D images (cached after the first run);
2. ``i2p fit --config configs/experiments/demo.yaml`` inflates it and finetunes with FIP-IO, regime ``ioms``
   (only the new stem and the head train; the copied BN layers update their running statistics),
   on generated 3D shapes, logging to W&B (offline without a key);
3. the best checkpoint is tested, and the paths of the run and checkpoints are printed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from i2p.cli import pretrain2d
from i2p.cli.configs import find_config

__all__ = ["main"]

PRETRAIN_ARGS = ["--model", "resnet18", "--image-size", "32", "--num-images", "4000", "--epochs", "8"]
# 8 epochs (~90 s on 2 CPUs, 2D val acc ~0.56 vs ~0.25 after 3): weaker 2D features made the inflated
# FIP-IO demo worse than frozen random layers.


def main(argv: Sequence[str] = ()) -> int:
    task, argv = argparse.ArgumentParser(add_help=False), list(argv)
    task.add_argument("--task", choices=("cls", "seg"), default="cls")
    known, argv = task.parse_known_args(argv)
    if known.task == "seg":  # the segmentation demo (i2p/cli/demo_seg.py)
        from i2p.cli import demo_seg

        return demo_seg.run(argv)
    parser = argparse.ArgumentParser(
        prog="i2p demo", description=__doc__.splitlines()[0],
        epilog="Other arguments go to `i2p fit`, e.g. --trainer.max_epochs 1.",
    )
    parser.add_argument("--config", default="demo.yaml", help="fit config (default: the shipped "
                        "configs/experiments/demo.yaml)")
    parser.add_argument("--pretrained", default=None, help="use this 2D checkpoint instead of pretrain2d")
    parser.add_argument("--task", choices=("cls", "seg"), default="cls", help="cls: shapes (this); seg: rooms")
    args, fit_overrides = parser.parse_known_args(list(argv))

    from i2p.cli.lightning import run_lightning  # heavy imports after --help

    start = time.time()
    if args.pretrained is None:
        ckpt, record = pretrain2d.run(PRETRAIN_ARGS)
        pretrained = str(ckpt)
        print(f"[demo] 2D ResNet-18 on generated images: val acc {record['val_acc']:.3f} (chance "
              f"{record['chance']:.3f})")
    else:
        pretrained = args.pretrained
    try:
        config = find_config(args.config)
    except FileNotFoundError as err:
        raise SystemExit(f"i2p demo: {err}") from None
    cli = run_lightning(["fit", "--config", str(config), "--model.init_args.pretrained", pretrained, *fit_overrides])
    trainer = cli.trainer
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or None
    results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None)
    metrics = results[0] if results else {}

    run_dir = getattr(trainer.logger, "run_dir", None) if trainer.logger is not None else None
    import wandb

    offline = bool(getattr(trainer.logger, "_offline", False))
    if wandb.run is not None:
        wandb.run.summary.update({"demo/wall_seconds": time.time() - start, "demo/pretrained_2d": pretrained})
        wandb.finish()
    elapsed = time.time() - start
    print("\n[demo] ---------------------------------------------------------------")
    print(f"[demo] FIP-IO (regime {cli.model.hparams.regime}) on SyntheticShapes ({cli.model.num_classes} classes, "
          f"chance {1 / cli.model.num_classes:.3f})")
    print(f"[demo] {cli.model.regime_summary}")
    print(f"[demo] test accuracy {metrics.get('test/acc', float('nan')):.4f}, "
          f"mean class accuracy {metrics.get('test/macc', float('nan')):.4f}")
    print(f"[demo] checkpoints: best {best}  last {getattr(ckpt_cb, 'last_model_path', None)}")
    if run_dir:
        hint = f"  (upload later: wandb sync {run_dir})" if offline else ""
        print(f"[demo] W&B run ({'offline' if offline else 'online'}): {run_dir}{hint}")
    print(f"[demo] wall time {elapsed:.0f} s")
    return 0
