"""``i2p speedup``: ratios from the recorded epochs to the target, "not reached" never as a number, early stop."""

from __future__ import annotations

import csv
import json

import pytest

from i2p.cli import speedup
from i2p.cli import sweep as sw


def _result(regime: str, seed: int, reached_epoch: int | None, max_epochs: int = 10, seconds_per_epoch: float = 2.0):
    """A run's result as ``sweep.execute`` writes it: TimeToAccuracy's record (0-based epoch) plus the curve."""
    epochs = max_epochs if reached_epoch is None else reached_epoch + 1
    history = [{"epoch": e, "step": 5 * e, "seconds": seconds_per_epoch * e, "val/acc": 0.1 * e}
               for e in range(1, epochs + 1)]
    reached = None if reached_epoch is None else {
        "epoch": reached_epoch, "step": 5 * epochs, "seconds": seconds_per_epoch * epochs, "value": 0.1 * epochs,
        "epochs": epochs}
    return {"id": f"{regime}-s{seed}", "regime": regime, "seed": seed, "target": 0.5, "monitor": "val/acc",
            "reached": reached, "history": history, "epochs": epochs, "max_epochs": max_epochs,
            "metrics": {"test/acc": 0.5}, "fit_seconds": seconds_per_epoch * epochs, "device": "cpu"}


def test_ratio_from_recorded_epochs_to_target():
    results = [_result("scratch", 0, 7), _result("scratch", 1, 9), _result("io", 0, 1), _result("io", 1, 3),
               _result("all", 0, 1, seconds_per_epoch=5.0), _result("all", 1, 1, seconds_per_epoch=5.0)]
    cells = {c["regime"]: c for c in speedup.aggregate(results, ["io", "all", "scratch"])}
    assert [c for c in cells] == ["io", "all", "scratch"]
    # epochs to target = recorded 0-based epoch + 1: scratch (8 + 10) / 2 = 9, io (2 + 4) / 2 = 3, all 2
    assert cells["scratch"]["epochs"][0] == 9 and cells["io"]["epochs"][0] == 3 and cells["all"]["epochs"][0] == 2
    assert cells["io"]["ratio_epochs"] == pytest.approx(9 / 3) and cells["all"]["ratio_epochs"] == pytest.approx(9 / 2)
    assert cells["all"]["ratio_seconds"] == pytest.approx((2.0 * 9) / (5.0 * 2))
    assert cells["scratch"]["ratio_epochs"] is None
    table = speedup.render(list(cells.values()), 0.5, "val/acc", "scratch", "cmd", 6, 6)
    assert "3.00×" in table and "4.50×" in table and "1.80×" in table and "1 (baseline)" in table


def test_not_reached_is_reported_as_such_never_as_a_number():
    results = [_result("scratch", 0, None, max_epochs=6), _result("scratch", 1, 4, max_epochs=6),
               _result("io", 0, 1, max_epochs=6), _result("io", 1, 2, max_epochs=6),
               _result("iobn", 0, None, max_epochs=6), _result("iobn", 1, None, max_epochs=6)]
    cells = {c["regime"]: c for c in speedup.aggregate(results, ["io", "iobn", "scratch"])}
    assert cells["scratch"]["reached"] == 1 and cells["scratch"]["epochs"] is None  # not every run reached it
    assert cells["io"]["ratio_epochs"] is None and cells["iobn"]["epochs"] is None
    rows = {r.split(" | ")[0]: r for r in speedup.render(list(cells.values()), 0.5, "val/acc", "scratch", "cmd", 6,
                                                         6).splitlines() if r.startswith("| FIP") or "scratch (" in r}
    assert "not reached within 6 epochs" in rows["| FIP-IO+BN (`iobn`)"]
    assert "not reached in 1 of 2 runs" in rows["| from scratch (`scratch`)"]
    io = rows["| FIP-IO (`io`)"]
    assert "scratch did not reach the target in every run" in io and "×" not in io  # no ratio as a number
    assert "2.5 ± 0.7" in io  # io reached in every run: its own epochs to target, (2 + 3) / 2


@pytest.mark.slow
def test_speedup_sweep_stops_at_the_target(speedup_sweep):
    out, _ = speedup_sweep
    with open(out / "speedup.csv") as f:
        rows = {r["regime"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"all", "scratch"}
    for r in rows.values():  # every run reaches val/acc >= 0 at its first validation and stops there
        assert r["reached"] == "True" and r["epochs_to_target"] == "1" and r["epochs_trained"] == "1"
        assert r["max_epochs"] == "3"
    result = json.loads((out / "runs" / "all-s0" / "result.json").read_text())
    assert result["reached"]["epoch"] == 0 and len(result["history"]) == 1
    tta = json.loads((out / "runs" / "all-s0" / "speedup_tta.json").read_text())  # TimeToAccuracy's own file
    assert tta["thresholds"]["0"]["epoch"] == result["reached"]["epoch"]
    table = (out / "speedup.md").read_text()
    assert "1.00×" in table and "2 of 2 runs finished" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sw.status(out / "runs" / "scratch-s0") == "done"
