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
    parser.add_argument("--pretrained", default=None, help="use this 2D checkpoint instead of pretrain2d "
                        "('false': frozen random layers, the baseline the inflated weights must beat)")
    parser.add_argument("--task", choices=("cls", "seg"), default="cls", help="cls: shapes (this); seg: rooms")
    args, fit_overrides = parser.parse_known_args(list(argv))

    from i2p.cli.lightning import I2PCLI, run_lightning  # heavy imports after --help
    from i2p.cli.summary import print_summary, run_summary, test_line

    class DemoCLI(I2PCLI):
        fit_summary = False  # the demo prints one block at the end, with the test results

    start = time.time()
    pretrained = pretrain2d.demo_weights(args.pretrained, "[demo]")
    pretrain_seconds = time.time() - start
    try:
        config = find_config(args.config)
    except FileNotFoundError as err:
        raise SystemExit(f"i2p demo: {err}") from None
    cli = run_lightning(["fit", "--config", str(config), "--model.init_args.pretrained", pretrained, *fit_overrides],
                        cli_class=DemoCLI)
    fit_seconds = time.time() - start - pretrain_seconds
    trainer = cli.trainer
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    fit_lines = run_summary(trainer)  # before test: restoring the best checkpoint resets the callback's paths
    results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None)
    metrics = results[0] if results else {}
    elapsed = time.time() - start
    timing = (f"wall time {elapsed:.0f} s (2D pretraining {pretrain_seconds:.0f} s, finetuning {fit_seconds:.0f} s, "
              f"test {elapsed - pretrain_seconds - fit_seconds:.0f} s)")

    import wandb

    if wandb.run is not None:
        wandb.run.summary.update({"demo/wall_seconds": elapsed, "demo/pretrain_seconds": pretrain_seconds,
                                  "demo/pretrained_2d": pretrained})
    model = cli.model
    lines = [f"FIP-IO (regime {model.hparams.regime}) on SyntheticShapes ({model.num_classes} classes, "
             f"chance {1 / model.num_classes:.3f}), 2D weights: {pretrained}", str(model.regime_summary)]
    lines += [*fit_lines, test_line(metrics)]
    lines.append(timing)
    print_summary(lines, prefix="[demo]")
    if wandb.run is not None:
        wandb.finish()
    return 0
