"""Time lost by a kill + resume against an uninterrupted run, and proof that the result is the same.

Three `i2p fit` processes on the same small config (SyntheticShapes, ResNet-18 FIP-IO, CPU, one thread):
an uninterrupted fit; a fit SIGKILLed ``--kill-at`` seconds after its first step checkpoint exists (so
at an arbitrary moment: mid-step, mid-validation or mid-write); and its resume with ``--ckpt_path last``.
Prints the wall times, the time lost (killed + resumed - uninterrupted, i.e. the restart cost plus the
steps replayed since the last checkpoint), how many steps were replayed, and whether the resumed run's
final checkpoint equals the uninterrupted one bit for bit. A few minutes on 2 CPU cores.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/kill_resume.py [--epochs 3] [--every 4] [--kill-at 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _fit(cfg: Path, args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1",
               WANDB_MODE="disabled")
    return subprocess.Popen([sys.executable, "-m", "i2p.cli", "fit", "--config", str(cfg), *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> float:
    start = getattr(proc, "started", time.perf_counter())
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"i2p fit failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - start


def _start(cfg: Path, args: list[str], cwd: Path) -> subprocess.Popen:
    proc = _fit(cfg, args, cwd)
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--every", type=int, default=4, help="checkpoint.every_n_train_steps")
    p.add_argument("--kill-at", type=float, default=5.0, help="seconds after the first step checkpoint appears")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.helpers.classifier import write_config
    from tests.helpers.runs import assert_same_run

    flags = ["--trainer.max_epochs", str(args.epochs), "--checkpoint.every_n_train_steps", str(args.every),
             "--trainer.callbacks+=callbacks.NeuralCollapse"]
    data = {"num_train": args.num_train, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="i2p-kill-resume-") as tmp:
        tmp = Path(tmp)
        runs = {}
        for name in ("uninterrupted", "killed"):
            (tmp / name).mkdir()
            runs[name] = write_config(tmp / name, regime="io", data=data)
        t_full = _finish(_start(runs["uninterrupted"], flags, tmp))

        proc = _start(runs["killed"], flags, tmp)
        last = runs["killed"].parent / "ckpt" / "last.ckpt"
        while not last.is_file() and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(args.kill_at)
        if proc.poll() is not None:
            raise SystemExit("the fit finished before the kill: lower --kill-at or raise --epochs")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t_killed = time.perf_counter() - proc.started  # type: ignore[attr-defined]
        step_at_resume = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        t_resume = _finish(_start(runs["killed"], [*flags, "--ckpt_path", "last"], tmp))

        try:
            assert_same_run(runs["uninterrupted"].parent / "ckpt" / "last.ckpt", last)
            same = "yes (weights, optimizer, schedule, best score, collapse history)"
        except AssertionError as e:
            same = f"NO: {e}"
        total_steps = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]

    lost = t_killed + t_resume - t_full
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread per process")
    print(f"run: {args.epochs} epochs x {args.num_train // args.batch_size} steps, last every {args.every} steps, "
          f"SIGKILL {args.kill_at:.1f} s after the first checkpoint")
    print(f"uninterrupted fit          {t_full:7.1f} s")
    print(f"killed fit (until SIGKILL) {t_killed:7.1f} s")
    print(f"resumed fit                {t_resume:7.1f} s  (from step {step_at_resume} of {total_steps})")
    print(f"time lost                  {lost:7.1f} s  ({100 * lost / t_full:.0f} % of the uninterrupted run: process "
          f"start, model build, checkpoint load, and the steps since the last checkpoint)")
    print(f"final checkpoint identical to the uninterrupted run: {same}")


if __name__ == "__main__":
    main()
