"""``i2p fewshot`` and the sweep machinery: the table of the runs it ran, resuming, array tasks, a run per device."""

from __future__ import annotations

import csv
import json
import statistics
import sys
import textwrap
from pathlib import Path

import pytest

from i2p.cli import fewshot
from i2p.cli import sweep as sw
from i2p.cli.lightning import parse_config
from i2p.cli.tables import fmt_mean_std
from tests.helpers.classifier import write_config
from tests.helpers.sweeps import NO_CHECKPOINT, tiny_sweep_config


def _rows(out: Path) -> list[dict]:
    with open(out / "sweep.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_sweep_table_rows_counts_mean_std(fewshot_sweep):
    out, _ = fewshot_sweep
    rows = _rows(out)
    assert sorted((r["regime"], int(r["shots"]), int(r["seed"])) for r in rows) == sorted(
        (g, k, s) for g in ("all", "scratch") for k in (1, 2) for s in (0, 1))
    for r in rows:  # K shapes of each of the 4 classes; the full test set
        assert int(r["train_samples"]) == 4 * int(r["shots"]) and int(r["test_samples"]) == 12
    results = sw.load_results(sorted((out / "runs").iterdir()))
    cells = fewshot.aggregate(results, ["all", "scratch"])
    assert [(c["shots"], c["regime"], c["runs"]) for c in cells] == [(1, "all", 2), (1, "scratch", 2), (2, "all", 2),
                                                                     (2, "scratch", 2)]
    for c in cells:
        accs = [float(r["test_acc"]) for r in rows if r["regime"] == c["regime"] and int(r["shots"]) == c["shots"]]
        assert c["mean"] == pytest.approx(statistics.fmean(accs)) and c["std"] == pytest.approx(statistics.stdev(accs))
        scratch = next(x for x in cells if x["shots"] == c["shots"] and x["regime"] == "scratch")
        assert c["gain"] == (None if c["regime"] == "scratch" else pytest.approx(c["mean"] - scratch["mean"]))
    table = (out / "fewshot.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ") and "shots" not in line and "---" not in line]
    assert len(lines) == 4 and "8 of 8 runs finished" in table
    first = cells[0]
    assert lines[0].split(" | ")[2] == "2" and f"{100 * first['mean']:.1f} ± {100 * first['std']:.1f}" in lines[0]
    assert (out / "fewshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every run's result names the exact i2p fit command that made it
    one = json.loads((out / "runs" / "all-k2-s1" / "result.json").read_text())
    assert one["command"].startswith("i2p fit --config") and "--data.init_args.few_shot 2" in one["command"]
    assert not (out / "runs" / "all-k2-s1" / "checkpoints").exists()  # removed once the result is written


@pytest.mark.slow
def test_aggregate_mean_std_gain_of_distinct_accuracies(fewshot_sweep):
    """The tiny runs all score near chance; the same results with distinct accuracies check the arithmetic."""
    out, _ = fewshot_sweep
    results = sw.load_results(sorted((out / "runs").iterdir()))
    for i, r in enumerate(results):
        r["metrics"] = {"test/acc": 0.1 + 0.07 * i + 0.01 * i * i, "test/acc_vote": 0.2 + 0.05 * i}
    cells = {(c["shots"], c["regime"]): c for c in fewshot.aggregate(results, ["all", "scratch"])}
    for (shots, regime), c in cells.items():
        mine = [r for r in results if (r["shots"], r["regime"]) == (shots, regime)]
        accs = [r["metrics"]["test/acc"] for r in mine]
        assert c["runs"] == 2 and c["std"] > 0
        assert c["mean"] == pytest.approx(statistics.fmean(accs)) and c["std"] == pytest.approx(statistics.stdev(accs))
        assert c["vote_mean"] == pytest.approx(statistics.fmean(r["metrics"]["test/acc_vote"] for r in mine))
        if regime != "scratch":
            assert c["gain"] == pytest.approx(c["mean"] - cells[(shots, "scratch")]["mean"])
    table = fewshot.render(list(cells.values()), "paper", "cmd", 8, 8)
    assert "voted (%)" in table and fmt_mean_std(cells[(1, "all")]["mean"], cells[(1, "all")]["std"]) in table


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_refuses_another_command(fewshot_sweep, capsys):
    out, args = fewshot_sweep
    results = sorted((out / "runs").glob("*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    capsys.readouterr()
    assert fewshot.main(args) == 0
    assert "to train" not in capsys.readouterr().out  # nothing left to train
    assert {p: p.stat().st_mtime_ns for p in results} == before
    with pytest.raises(SystemExit, match="different command"):
        fewshot.main([*args, "--trainer.max_epochs", "2"])


@pytest.mark.slow
def test_killed_run_resumes_from_last_ckpt(tmp_path):
    cfg = tiny_sweep_config(tmp_path, max_epochs=2)
    args = ["--config", str(cfg), "--shots", "1", "--seeds", "0", "--regimes", "all", "--out", str(tmp_path / "o"),
            "--keep-checkpoints", "--list"]
    assert fewshot.main(args) == 0  # --list prepares the run folders, trains nothing
    run = tmp_path / "o" / "runs" / "all-k1-s0"
    assert sw.status(run) == "pending"
    sw.execute(run, ["--trainer.max_epochs", "1"])  # as if killed after epoch 1: a last.ckpt, then no result
    (run / "result.json").unlink()
    assert sw.status(run) == "resumable"
    result = sw.execute(run)
    assert result["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert result["epochs"] == 2 and [h["epoch"] for h in result["history"]] == [1, 2]  # the curve continued
    assert sw.status(run) == "done"


def test_array_tasks_share_the_matrix_disjointly():
    dirs = [Path(f"r{i}") for i in range(7)]
    shares = [sw.select(dirs, i, 3) for i in range(3)]
    assert sorted(d for s in shares for d in s) == sorted(dirs) and sum(map(len, shares)) == 7
    assert shares[1] == [Path("r1"), Path("r4")]
    assert sw.select(dirs, None, None) == dirs
    with pytest.raises(SystemExit, match="task-index"):
        sw.select(dirs, 3, 3)


def test_one_run_per_device_at_a_time(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import json, os, sys, time
        run = sys.argv[1]
        start = time.monotonic()
        time.sleep(0.3)
        json.dump({"device": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.monotonic(),
                   "args": sys.argv[2:]}, open(os.path.join(run, "seen.json"), "w"))
        sys.exit(3 if run.endswith("r2") else 0)
    """))
    runs = [tmp_path / f"r{i}" for i in range(5)]
    for r in runs:
        r.mkdir()
    codes = sw.run_parallel(runs, ["0", "1"], extra_args=["--trainer.devices", "1"],
                            worker=[sys.executable, str(worker)], poll=0.05)
    assert codes == {r: (3 if r.name == "r2" else 0) for r in runs}
    seen = [json.loads((r / "seen.json").read_text()) for r in runs]
    assert {s["device"] for s in seen} == {"0", "1"} and all(s["args"] == ["--trainer.devices", "1"] for s in seen)
    for dev in ("0", "1"):
        spans = sorted((s["start"], s["end"]) for s in seen if s["device"] == dev)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))  # never two at once


@pytest.mark.slow
def test_wandb_group_and_tags_reach_the_logger(tmp_path):
    cfg = write_config(tmp_path, wandb=True)
    wandb = sw.wandb_args(str(cfg), [], "tiny/fewshot", "fewshot")
    assert wandb == {"group": "tiny/fewshot", "job_type": "fewshot"}
    sweep = sw.Sweep(kind="fewshot", command="", config=str(cfg), fit_args=[], out=tmp_path / "o",
                     group="tiny/fewshot", runs=[])
    run = sw.Run(id="io-k5-s0", fields={}, args=[], tags=["io", "shots5", "seed0"])
    logger = parse_config(["fit", *sw.run_argv(sweep, run, wandb)]).fit.trainer.logger.init_args
    assert (logger.group, logger.tags, logger.job_type, logger.name) == (
        "tiny/fewshot", ["io", "shots5", "seed0"], "fewshot", "tiny/fewshot/io-k5-s0")
    assert sw.wandb_args(str(tiny_sweep_config(tmp_path / "nolog")), [], "g", "fewshot") is None  # logger: false


def test_each_run_of_a_sweep_ends_its_wandb_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="i2p-test")
    assert wandb.run is run
    sw._finish_wandb()  # the next run of the sweep must open its own
    assert wandb.run is None
    sw._finish_wandb()  # and with no run it does nothing


@pytest.mark.slow
def test_episodes_sweep_trains_on_each_folds_classes(tmp_path):
    out = tmp_path / "ep"
    args = ["--config", str(tiny_sweep_config(tmp_path)), "--protocol", "episodes", "--ways", "2", "--shots", "1",
            "--folds", "2", "--queries", "2", "--seeds", "0", "--regimes", "all", "--out", str(out), *NO_CHECKPOINT]
    assert fewshot.main(args) == 0
    rows = _rows(out)
    assert sorted(int(r["fold"]) for r in rows) == [0, 1]
    assert all(int(r["train_samples"]) == 2 and int(r["test_samples"]) == 4 and r["ways"] == "2" for r in rows)
    table = (out / "episodes.md").read_text()
    assert "| ways | shots |" in table and "N-way K-shot episodes" in table
    cell = fewshot.aggregate(sw.load_results(sorted((out / "runs").iterdir())), ["all"])
    assert [(c["ways"], c["shots"], c["runs"]) for c in cell] == [(2, 1, 2)]


def test_truncated_last_ckpt_is_set_aside(tmp_path):
    import torch

    good = tmp_path / "good" / "last.ckpt"
    good.parent.mkdir()
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(1000)}}, good)
    assert sw._resumable(good) == str(good)
    bad = tmp_path / "bad" / "last.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[:-200])  # killed mid-write
    with pytest.warns(UserWarning, match="unreadable"):
        assert sw._resumable(bad) is None
    assert not bad.exists() and len(list(bad.parent.glob("last.ckpt.broken-*"))) == 1
    assert sw._resumable(tmp_path / "none" / "last.ckpt") is None
