"""``i2p report``: docs/results.md from the sweep folders, with their commands, the paper's numbers and a reading."""

from __future__ import annotations

import json

import pytest

from i2p.cli import report


@pytest.mark.slow
def test_report_from_sweep_folders(fewshot_sweep, speedup_sweep, tmp_path):
    fs, _ = fewshot_sweep
    sp, _ = speedup_sweep
    out = tmp_path / "docs" / "results.md"
    assert report.main(["--fewshot", str(fs), "--episodes", str(tmp_path / "none"), "--speedup", str(sp),
                        "--out", str(out)]) == 0
    text = out.read_text()
    for spec in (fs, sp):  # each table carries the exact command that made it
        assert f"`{json.loads((spec / 'sweep.json').read_text())['command']}`" in text
    assert "| 2 | from scratch (`scratch`) | 2 |" in text and "8 of 8 runs finished" in text
    assert "Not run yet" in text and str(tmp_path / "none") in text  # the missing episodes sweep says so
    assert "arXiv:2106.04180" in text and "| I2P-MAE |" in text  # the paper's claims and published numbers
    reading = text.split("## Reading")[1]
    assert "K = 1: the best FIP regime" in reading and "K = 2:" in reading
    assert "1.00× sooner in epochs" in reading  # both regimes reached the (trivial) target after one epoch
    for png in ("fewshot.png", "speedup.png"):
        assert (out.parent / "results" / png).read_bytes()[:4] == b"\x89PNG" and f"(results/{png})" in text


def test_readings_say_not_reached_and_compare_with_the_spread():
    cells = [{"ways": None, "shots": 1, "regime": "io", "runs": 3, "mean": 0.5, "std": 0.02, "gain": 0.1},
             {"ways": None, "shots": 1, "regime": "scratch", "runs": 3, "mean": 0.4, "std": 0.03, "gain": None},
             {"ways": None, "shots": 5, "regime": "io", "runs": 3, "mean": 0.61, "std": 0.05, "gain": 0.01},
             {"ways": None, "shots": 5, "regime": "scratch", "runs": 3, "mean": 0.6, "std": 0.04, "gain": None}]
    lines = report.reading_fewshot(cells)
    assert "+10.0 points over scratch (beyond the run-to-run spread" in lines[0]
    assert "+1.0 points over scratch (within the run-to-run spread" in lines[1]
    speed = [{"regime": "io", "runs": 2, "reached": 2, "max_epochs": 6, "epochs": (3.0, 1.4), "ratio_epochs": None,
              "ratio_seconds": None},
             {"regime": "iobn", "runs": 2, "reached": 1, "max_epochs": 6, "epochs": None, "ratio_epochs": None,
              "ratio_seconds": None},
             {"regime": "scratch", "runs": 2, "reached": 0, "max_epochs": 6, "epochs": None}]
    io, iobn, scratch = report.reading_speedup(speed)
    assert "in every run (mean 3.0 epochs) while scratch did not" in io
    assert "did not reach the target in 1 of 2 runs within 6 epochs" in iobn
    assert "did not reach the target in 2 of 2 runs within 6 epochs, so no ratio" in scratch
    assert not any("×" in line for line in (io, iobn, scratch))  # no ratio given as a number
