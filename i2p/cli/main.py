"""The ``i2p`` console script: Lightning's subcommands plus the project's own, one per module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["EXTRA_COMMANDS", "main"]

#: name -> (module with a ``main(argv) -> int | None``, one-line help)
EXTRA_COMMANDS = {
    "predict": ("i2p.cli.predict", "classify files (a CSV row each) or label every point (segmentation checkpoint)"),
    "pretrain2d": ("i2p.cli.pretrain2d", "train a timm ConvNet on generated 2D images (or an ImageFolder)"),
    "inflate": ("i2p.cli.inflate", "inflate a 2D timm checkpoint into a 3D sparse state dict"),
    "demo": ("i2p.cli.demo", "pretrain2d -> FIP-IO finetune on synthetic shapes (--task seg: rooms) -> test, offline"),
    "fewshot": ("i2p.cli.fewshot", "few-shot sweep (shots x seeds x regimes; paper or N-way K-shot episodes)"),
    "speedup": ("i2p.cli.speedup", "epochs / steps / seconds to a target accuracy per regime, scratch / FIP"),
    "report": ("i2p.cli.report", "regenerate docs/results.md from the sweep folders"),
}


def description() -> str:
    """The ``--help`` text: what i2p is, and the extra commands one per line."""
    extra = "\n".join(f"  i2p {name:<11} {help_}" for name, (_, help_) in EXTRA_COMMANDS.items())
    return "Image2Point on PyTorch Lightning. Also:\n" + extra


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``i2p`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in EXTRA_COMMANDS:
        module = importlib.import_module(EXTRA_COMMANDS[args[0]][0])
        return int(module.main(args[1:]) or 0)
    from i2p.checkpoint_file import CheckpointError
    from i2p.cli.lightning import run_lightning
    from i2p.cli.resume import CLIError

    try:
        run_lightning(None if argv is None else args, description=description())
    except (CLIError, CheckpointError) as e:  # bad input the user can fix: one line, no traceback
        command = next((a for a in args if not a.startswith("-")), "")
        print(f"i2p {command}: error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
