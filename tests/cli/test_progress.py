"""Off a terminal (SLURM, nohup, | tee) progress is plain lines, and `i2p fit` ends with its summary block."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from i2p.cli.progress import PlainProgress, choose_progress_bar, format_metrics
from tests.helpers.classifier import write_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rich_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert type(choose_progress_bar(Tty())).__name__ == "RichProgressBar"
    assert isinstance(choose_progress_bar(io.StringIO()), PlainProgress)
    assert format_metrics({"train/loss_epoch": 1.5, "train/loss": 9.0, "val/acc": 0.25}) == \
        "train/loss 1.5000 val/acc 0.2500"


@pytest.mark.slow
def test_fit_into_a_pipe_prints_plain_lines_and_the_summary(tmp_path):
    cfg = write_config(tmp_path, enable_progress_bar=True, max_epochs=2, log_every_n_steps=2,
                       data={"num_train": 24})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "i2p.cli", "fit", "--config", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # stdout is a pipe, not a terminal
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "\x1b[" not in out and "━" not in out  # no terminal control codes, no bar characters
    steps = re.findall(r"^\[train\] epoch (\d)/2 step (\d+)/3 loss [\d.]+ lr [\d.e-]+ [\d.]+ samples/s$", out, re.M)
    assert steps == [("1", "2"), ("2", "2")]  # every 2 steps of 3, each epoch
    epochs = re.findall(r"^\[epoch (\d)/2\] train/loss [\d.]+ train/acc [\d.]+ val/loss [\d.]+ val/acc [\d.]+ "
                        r"val/macc [\d.]+ lr [\d.e-]+ [\d.]+ samples/s \([\d.]+ s\)$", out, re.M)
    assert epochs == ["1", "2"]
    assert re.search(r"^\[i2p\] best val/acc [\d.]+ after 2 epoch\(s\), 6 steps$", out, re.M)
    assert re.search(rf"^\[i2p\] checkpoints: best {re.escape(str(tmp_path / 'ckpt'))}/best-\S+\.ckpt$", out, re.M)
    assert re.search(rf"^\[i2p\]\s+last {re.escape(str(tmp_path / 'ckpt'))}/last\.ckpt$", out, re.M)
