"""The block `i2p fit` and `i2p demo` end with: best metric, checkpoint paths, the W&B run, the time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

__all__ = ["test_line", "run_summary", "print_summary"]

RULE = "-" * 64


def _wandb_line(trainer: pl.Trainer) -> str | None:
    logger = trainer.logger
    run_dir = getattr(logger, "run_dir", None) if logger is not None else None
    try:
        run_dir = run_dir() if callable(run_dir) else run_dir
    except Exception:  # a disabled run has no directory
        run_dir = None
    if not run_dir:
        return None
    offline = bool(getattr(logger, "_offline", False))
    hint = f"  (upload later: wandb sync {run_dir})" if offline else ""
    return f"W&B run ({'offline' if offline else 'online'}): {run_dir}{hint}"


def test_line(metrics: Mapping[str, Any]) -> str:
    """``test: test/acc 0.8 test/macc 0.7 ...`` (accuracy first)."""
    keys = sorted((k for k in metrics if k.startswith("test/")), key=lambda k: (k != "test/acc", k))
    return "test: " + " ".join(f"{k} {float(metrics[k]):.4f}" for k in keys)


def run_summary(trainer: pl.Trainer, test_metrics: Mapping[str, Any] | None = None,
                seconds: float | None = None, extra: list[str] | None = None) -> list[str]:
    """The lines of the summary block: best monitored metric, checkpoints, W&B run, test metrics, time."""
    lines = list(extra or [])
    ckpt = trainer.checkpoint_callback
    if ckpt is not None:
        monitor = getattr(ckpt, "monitor", None)
        score = getattr(ckpt, "best_model_score", None)
        if monitor and score is not None:
            lines.append(f"best {monitor} {float(score):.4f} after {trainer.current_epoch} epoch(s), "
                         f"{trainer.global_step} steps")
        best = getattr(ckpt, "best_model_path", "") or "-"
        last = getattr(ckpt, "last_model_path", "") or "-"
        lines.append(f"checkpoints: best {best}")
        lines.append(f"             last {last}")
    if test_metrics:
        lines.append(test_line(test_metrics))
    wandb = _wandb_line(trainer)
    if wandb:
        lines.append(wandb)
    if seconds is not None:
        lines.append(f"wall time {seconds:.0f} s")
    return lines


def print_summary(lines: list[str], prefix: str = "[i2p]") -> None:
    """Print the block, framed by rules, each line prefixed (grep-able in a cluster log)."""
    print(f"\n{prefix} {RULE}", flush=False)
    for line in lines:
        print(f"{prefix} {line}")
    print(f"{prefix} {RULE}", flush=True)
