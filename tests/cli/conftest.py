"""Sweeps that several CLI test files read (run once per session: each run is a real tiny fit + test)."""

from __future__ import annotations

import pytest

from i2p.cli import fewshot, speedup
from tests.helpers.sweeps import NO_CHECKPOINT, tiny_sweep_config


@pytest.fixture(scope="session")
def fewshot_sweep(tmp_path_factory):
    """2 shots x 2 seeds x 2 regimes of the paper protocol; returns (out folder, command args)."""
    root = tmp_path_factory.mktemp("fewshot")
    args = ["--config", str(tiny_sweep_config(root)), "--shots", "1", "2", "--seeds", "0", "1", "--regimes", "all",
            "scratch", "--out", str(root / "out"), *NO_CHECKPOINT]
    assert fewshot.main(args) == 0
    return root / "out", args


@pytest.fixture(scope="session")
def speedup_sweep(tmp_path_factory):
    """Regimes all and scratch to a target every run reaches after its first epoch (max 3 epochs)."""
    root = tmp_path_factory.mktemp("speedup")
    args = ["--config", str(tiny_sweep_config(root)), "--target", "0.0", "--max-epochs", "3", "--regimes", "all",
            "scratch", "--out", str(root / "out"), *NO_CHECKPOINT]
    assert speedup.main(args) == 0
    return root / "out", args
