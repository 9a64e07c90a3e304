"""Sweeps of ``i2p fit`` runs (``i2p fewshot``, ``i2p speedup``): a run matrix that resumes, runs
one run per GPU, or as SLURM array tasks, and logs every run to one W&B group.

A sweep folder (``--out``)::

    sweep.json                  the sweep's command and run matrix
    runs/<id>/run.json          the ``i2p fit`` arguments that define the run (written once)
    runs/<id>/checkpoints/      ``last.ckpt`` while it trains: a killed run resumes from it
    runs/<id>/result.json       written atomically once the run is trained and tested: a run
                                with one is finished, and a re-run of the sweep skips it
    runs/<id>/log.txt           its output, when it ran in a subprocess (``--devices``)
    sweep.csv (speedup.csv), <kind>.md, .png  the aggregate of the finished runs, rewritten by every invocation

Each run goes through the real LightningCLI (``run_lightning`` with the project's defaults and
``--config``), is trained, then tested on its final weights: no checkpoint is picked by a metric,
so nothing is selected on the test set (ModelNet40 / ScanObjectNN have no validation split).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.trainer.states import TrainerFn

from i2p.io import atomic_write_bytes

__all__ = [
    "Run", "Sweep", "History", "StopAtTarget", "add_sweep_arguments", "default_out", "config_name", "wandb_args",
    "run_argv", "prepare", "status", "select", "execute", "WORKER", "run_parallel", "run_sweep", "load_results",
    "write_csv", "write_json", "TEST_METRICS",
]  # fmt: skip

#: the test metrics a result keeps (per-class accuracies stay in W&B)
TEST_METRICS = ("test/acc", "test/macc", "test/loss", "test/acc_vote", "test/macc_vote")
#: the epoch-level metrics a run's learning curve keeps
CURVE_METRICS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/macc")


@dataclass
class Run:
    """One cell of a sweep: its id (a folder name), the CSV columns it fixes, its ``i2p fit`` overrides."""

    id: str
    fields: dict[str, Any]
    args: list[str]
    tags: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    """What every run of a sweep shares; ``command`` is the sweep's own command line (recorded)."""

    kind: str
    command: str
    config: str
    fit_args: list[str]
    out: Path
    group: str
    runs: list[Run]
    steps: int | None = None  # ~optimizer steps per run (max_epochs from the training set's batches)
    target: float | None = None  # stop a run once ``monitor`` reaches it (speed-up)
    monitor: str = "val/acc"
    keep_checkpoints: bool = False


# ---------------------------------------------------------------------------------------------- options
def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every sweep command shares (execution, resumption, W&B grouping)."""
    parser.add_argument("--config", required=True, help="the i2p fit config of every run (a path or a shipped name)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--regimes", nargs="+", default=["io", "iobn", "all", "scratch"],
                        help="FIP regimes (default io iobn all scratch)")
    parser.add_argument("--out", default=None, help="sweep folder (default runs/<config name>/<kind>)")
    parser.add_argument("--group", default=None, help="W&B group of the runs (default <config name>/<kind>)")
    parser.add_argument("--devices", nargs="+", default=None, metavar="ID",
                        help="CUDA device ids: one run per device at a time, each in its own process")
    parser.add_argument("--task-index", type=int, default=None,
                        help="this SLURM array task's share: runs i with i %% num-tasks == task-index")
    parser.add_argument("--num-tasks", type=int, default=None, help="number of array tasks sharing the sweep")
    parser.add_argument("--collect", action="store_true", help="train nothing: write the tables of finished runs")
    parser.add_argument("--list", action="store_true", help="print the run matrix with each run's state and exit")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of each run (OMP_NUM_THREADS of --devices workers); default torch's")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's last.ckpt after its result is written (default: removed)")


def config_name(config: str | Path) -> str:
    """The config's ``name:`` (e.g. ``modelnet40/io_resnet18``), else its file stem."""
    import yaml

    from i2p.cli.configs import find_config

    path = find_config(str(config))
    data = yaml.safe_load(path.read_text()) or {}
    name = data.get("name") if isinstance(data, dict) else None
    return str(name) if name else path.stem


def default_out(config: str | Path, kind: str) -> Path:
    return Path("runs") / config_name(config) / kind


def wandb_args(config: str, fit_args: Sequence[str], group: str, job_type: str) -> dict[str, str] | None:
    """The W&B ``init`` arguments a run needs beside its tags (group, job type), when the config logs
    to W&B; None when its logger is something else or off. Validates the config on the way.
    """
    from i2p.cli.configs import find_config
    from i2p.cli.lightning import parse_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = parse_config(["fit", "--config", str(find_config(config)), *fit_args])
    logger = cfg.fit.trainer.get("logger")
    loggers = logger if isinstance(logger, list) else [logger]
    if not any("Wandb" in str(getattr(lg, "class_path", "")) for lg in loggers if lg):
        return None
    return {"group": group, "job_type": job_type}


def run_argv(sweep: Sweep, run: Run, wandb: dict[str, str] | None) -> list[str]:
    """The ``i2p fit`` arguments (after ``fit``) that define ``run``: the sweep's config and
    overrides, then the run's, then where its checkpoints go and how W&B groups it.
    """
    from i2p.cli.configs import find_config

    run_dir = sweep.out / "runs" / run.id
    argv = ["--config", str(find_config(sweep.config)), *sweep.fit_args, *run.args,
            "--name", f"{sweep.group}/{run.id}", "--trainer.default_root_dir", str(run_dir),
            "--checkpoint.dirpath", str(run_dir / "checkpoints"),
            "--checkpoint.monitor", "null", "--checkpoint.save_top_k", "0"]
    if wandb is not None:
        argv += ["--trainer.logger.init_args.group", wandb["group"], "--trainer.logger.init_args.job_type",
                 wandb["job_type"], "--trainer.logger.init_args.tags", json.dumps(run.tags)]
    return argv


# ---------------------------------------------------------------------------------------------- files
def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to redo that run") from None


def prepare(sweep: Sweep, wandb: dict[str, str] | None) -> list[Path]:
    """Write ``sweep.json`` and each run's ``run.json``; a folder made by a different command is an error."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    write_json(sweep.out / "sweep.json", {
        "kind": sweep.kind, "command": sweep.command, "config": sweep.config, "fit_args": sweep.fit_args,
        "group": sweep.group, "steps": sweep.steps, "target": sweep.target, "monitor": sweep.monitor,
        "runs": [r.id for r in sweep.runs],
    })  # fmt: skip
    dirs = []
    for run in sweep.runs:
        run_dir = sweep.out / "runs" / run.id
        spec = {"id": run.id, "kind": sweep.kind, "fields": run.fields, "argv": run_argv(sweep, run, wandb),
                "steps": sweep.steps, "target": sweep.target, "monitor": sweep.monitor,
                "keep_checkpoints": sweep.keep_checkpoints}  # fmt: skip
        path = run_dir / "run.json"
        if path.is_file():
            old = _read_json(path)
            if old.get("argv") != spec["argv"] or old.get("steps") != spec["steps"] or \
                    old.get("target") != spec["target"]:
                raise SystemExit(f"{path}: this run was defined by a different command\n  was: i2p fit "
                                 f"{shlex.join(old.get('argv', []))}\n  now: i2p fit {shlex.join(spec['argv'])}\n"
                                 f"Use another --out, or delete {run_dir} to redo it.")
        write_json(path, spec)
        dirs.append(run_dir)
    return dirs


def status(run_dir: Path) -> str:
    """``done`` (result written), ``resumable`` (a last.ckpt) or ``pending``."""
    if (run_dir / "result.json").is_file():
        return "done"
    return "resumable" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "pending"


def select(run_dirs: Sequence[Path], task_index: int | None, num_tasks: int | None) -> list[Path]:
    """A SLURM array task's share of the matrix (by position, so every task agrees), else all."""
    if (task_index is None) != (num_tasks is None):
        raise SystemExit("--task-index and --num-tasks go together")
    if num_tasks is None:
        return list(run_dirs)
    if num_tasks < 1 or not 0 <= task_index < num_tasks:
        raise SystemExit(f"--task-index must be in [0, {num_tasks}), got {task_index}")
    return [d for i, d in enumerate(run_dirs) if i % num_tasks == task_index]


def load_results(run_dirs: Iterable[Path]) -> list[dict]:
    return [_read_json(d / "result.json") for d in run_dirs if (d / "result.json").is_file()]


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows (dicts) as CSV, columns in first-seen order, written atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


# ---------------------------------------------------------------------------------------------- one run
class History(Callback):
    """A run's learning curve (epoch-level train/val metrics after each training epoch) and its fit
    seconds; both are kept in checkpoints, so a resumed run continues them.
    """

    def __init__(self, keys: Sequence[str] = CURVE_METRICS) -> None:
        self.keys = tuple(keys)
        self.rows: list[dict[str, float]] = []
        self._offset, self._t0 = 0.0, None

    def elapsed(self) -> float:
        return self._offset + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t0 = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "seconds": round(self.elapsed(), 3)}
        row |= {k: float(metrics[k]) for k in self.keys if k in metrics}
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self._offset, self._t0 = float(state_dict.get("elapsed", 0.0)), None


class StopAtTarget(Callback):
    """Stop fitting once ``tta`` has recorded ``target`` (after it, in callback order), so the stop and
    the record agree; Lightning's ``EarlyStopping(stopping_threshold=...)`` stops on a strict ``>``.
    """

    def __init__(self, tta: Callback, target: float) -> None:
        self.tta, self.key = tta, f"{float(target):g}"

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.key in self.tta.reached:
            trainer.should_stop = True


def _resumable(last: Path) -> str | None:
    """``last.ckpt`` when it is a complete checkpoint; a truncated one (killed mid-write) is set aside."""
    if not last.is_file():
        return None
    import torch

    try:
        torch.load(last, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # a half-written zip fails on its central directory
        bad = last.with_name(f"last.ckpt.broken-{int(time.time())}")
        last.rename(bad)
        warnings.warn(f"{last}: unreadable ({type(err).__name__}: {err}); moved to {bad.name}, the run restarts")
        return None
    return str(last)


def _finish_wandb() -> None:
    """End this process's W&B run, so the next run of the sweep starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _build_cli() -> type:
    from i2p.cli.lightning import I2PCLI

    class BuildCLI(I2PCLI):
        """Parse and instantiate (the project's defaults, links, plugins); the sweep runs fit and test."""

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    return BuildCLI


def execute(run_dir: Path, extra_args: Sequence[str] = ()) -> dict:
    """Train and test one run (resuming from its ``last.ckpt``) and write its ``result.json``.

    ``extra_args`` are placement overrides that do not define the run (``--trainer.devices 1``).
    A finished run returns its result untouched.
    """
    run_dir = Path(run_dir)
    if (run_dir / "result.json").is_file():
        return _read_json(run_dir / "result.json")
    spec = _read_json(run_dir / "run.json")
    from callbacks import TimeToAccuracy
    from i2p.cli.lightning import run_lightning

    argv = [*spec["argv"], *extra_args]
    resume = _resumable(run_dir / "checkpoints" / "last.ckpt")
    history, tta = History(), None
    callbacks: list[Callback] = [history]
    target, monitor = spec.get("target"), spec.get("monitor") or "val/acc"
    if target is not None:
        tta = TimeToAccuracy(monitor=monitor, thresholds=[target], filename="speedup_tta.json")
        callbacks += [tta, StopAtTarget(tta, target)]
    start = time.monotonic()
    try:
        # not inside warnings.catch_warnings: the filters run_lightning sets (quiet_known_warnings) must outlive it
        cli = run_lightning(["fit", *argv], cli_class=_build_cli(), trainer_defaults={"callbacks": callbacks})
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        if trainer.num_devices * trainer.num_nodes > 1:
            raise SystemExit(f"{run_dir.name}: a sweep trains one device per run (got {trainer.num_devices} devices "
                             f"x {trainer.num_nodes} nodes); use --devices 0 1 ... for one run per GPU, or i2p fit "
                             f"for DDP")
        command = ["fit", *spec["argv"]]
        if spec.get("steps"):
            batches = len(dm.train_dataloader())
            trainer.fit_loop.max_epochs = max(1, math.ceil(spec["steps"] / max(1, batches)))
            command += ["--trainer.max_epochs", str(trainer.max_epochs)]
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
        if trainer.interrupted:
            raise RuntimeError(f"{run_dir.name}: fit was interrupted; its result is not written (re-run to resume)")
        fit_done = time.monotonic()
        tested = trainer.test(model, datamodule=dm, verbose=False)
        metrics = tested[0] if tested else {}
    finally:
        _finish_wandb()
    reached = None
    if tta is not None:
        reached = tta.reached.get(f"{float(target):g}")
        if reached is not None:
            reached = {**reached, "epochs": int(reached["epoch"]) + 1}
    result = {
        "id": spec["id"], "kind": spec.get("kind"), **spec["fields"],
        "metrics": {k: float(metrics[k]) for k in TEST_METRICS if k in metrics},
        "epochs": trainer.current_epoch, "max_epochs": trainer.max_epochs, "steps": trainer.global_step,
        "train_samples": len(dm.items("train")), "test_samples": len(dm.items("test")),
        "fit_seconds": round(history.elapsed(), 3), "test_seconds": round(time.monotonic() - fit_done, 3),
        "this_invocation_seconds": round(time.monotonic() - start, 3),
        "target": target, "monitor": monitor, "reached": reached, "history": history.rows,
        "resumed_from": resume, "device": str(trainer.strategy.root_device),
        "torch_threads": _torch_threads(), "cpus": os.cpu_count(), "command": "i2p " + shlex.join(command),
        "argv": spec["argv"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }  # fmt: skip
    write_json(run_dir / "result.json", result)
    if not spec.get("keep_checkpoints"):
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------- many runs
WORKER = (sys.executable, "-m", "i2p.cli.sweep")


def run_parallel(run_dirs: Sequence[Path], devices: Sequence[str], extra_args: Sequence[str] = (),
                 worker: Sequence[str] = WORKER, poll: float = 1.0, threads: int | None = None) -> dict[Path, int]:
    """Run each run in its own process (``worker RUN_DIR extra_args``), at most one per device at a
    time (``CUDA_VISIBLE_DEVICES`` = that device); output goes to ``<run>/log.txt``. Returns each
    run's exit status.
    """
    pending, active, codes = list(run_dirs), {}, {}
    while pending or active:
        for dev in devices:
            if dev not in active and pending:
                run_dir = pending.pop(0)
                log = open(run_dir / "log.txt", "ab")  # noqa: SIM115 (closed when the process ends)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(dev), "PYTHONUNBUFFERED": "1"}
                if threads:
                    env["OMP_NUM_THREADS"] = str(threads)
                cmd = [*worker, str(run_dir), *extra_args]
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                active[dev] = (proc, run_dir, log)
                print(f"[sweep] {run_dir.name} -> device {dev} (log {run_dir / 'log.txt'})", flush=True)
        for dev, (proc, run_dir, log) in list(active.items()):
            if proc.poll() is not None:
                log.close()
                codes[run_dir] = proc.returncode
                del active[dev]
        if active:
            time.sleep(poll)
    return codes


def run_sweep(sweep: Sweep, args: argparse.Namespace) -> tuple[list[dict], list[Path]]:
    """Prepare, list or run (sequentially, one per device, or this array task's share) the sweep;
    returns the results of all finished runs and the runs that failed in this invocation.
    """
    wandb = wandb_args(sweep.config, sweep.fit_args, sweep.group, sweep.kind)
    run_dirs = prepare(sweep, wandb)
    if args.list:
        for d in run_dirs:
            print(f"{status(d):<10} {d.name}")
        return load_results(run_dirs), []
    mine = select(run_dirs, args.task_index, args.num_tasks)
    todo = [d for d in mine if status(d) != "done"]
    failed: list[Path] = []
    if not args.collect and todo:
        print(f"[{sweep.kind}] {len(todo)} of {len(run_dirs)} runs to train ({len(mine) - len(todo)} of this share "
              f"finished) -> {sweep.out}", flush=True)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.devices:
            codes = run_parallel(todo, args.devices, extra_args=["--trainer.devices", "1"], threads=args.threads)
            failed = [d for d, rc in codes.items() if rc != 0]
        else:
            for i, d in enumerate(todo, 1):
                result = execute(d)
                acc = result["metrics"].get("test/acc", float("nan"))
                print(f"[{sweep.kind}] {i}/{len(todo)} {d.name}: test acc {acc:.4f}, "
                      f"{result['fit_seconds'] + result['test_seconds']:.0f} s", flush=True)
    for d in failed:
        print(f"[{sweep.kind}] FAILED {d.name}: see {d / 'log.txt'}", file=sys.stderr)
    return load_results(run_dirs), failed


def worker_main(argv: Sequence[str]) -> int:
    """``python -m i2p.cli.sweep RUN_DIR [placement overrides]``: one run, in this process."""
    if not argv:
        print("usage: python -m i2p.cli.sweep RUN_DIR [--trainer.devices 1 ...]", file=sys.stderr)
        return 2
    execute(Path(argv[0]), argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
