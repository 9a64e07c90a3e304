"""DDP on CPU (gloo), through the real command line: a 2-process fit (sync BN), then validation of one
checkpoint with 1 and 2 processes must give the same metrics (each sample counted once, no
deadlock although the ranks see different numbers of validation batches).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.classifier import write_config

REPO = Path(__file__).resolve().parents[2]


def _i2p(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "i2p.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _metrics(csv_dir: Path) -> dict[str, float]:
    files = list(csv_dir.rglob("metrics.csv"))
    assert len(files) == 1, files
    out: dict[str, float] = {}
    with files[0].open() as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items()
                        if v not in ("", None) and k.startswith(("val/", "val_per_class/"))})
    return out


def _csv_logger(path: Path) -> list[str]:
    return ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(path)]


@pytest.mark.ddp
def test_two_processes_fit_and_validate_like_one(tmp_path):
    # 9 validation shapes, batch 4: rank 0 gets 5 (2 batches), rank 1 gets 4 (1 batch)
    cfg = write_config(tmp_path, data={"num_val": 9, "batch_size": 4, "num_train": 16})
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    _i2p(["fit", "--config", str(cfg), *ddp, "--trainer.sync_batchnorm", "true"], tmp_path)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert ckpt.is_file()

    _i2p(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt), *_csv_logger(tmp_path / "one")], tmp_path)
    _i2p(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt), *ddp, *_csv_logger(tmp_path / "two")], tmp_path)
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert {"val/acc", "val/macc", "val/loss", "val_per_class/acc_sphere"} <= one.keys()
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
