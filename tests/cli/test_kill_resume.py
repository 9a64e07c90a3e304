"""Kill a real ``i2p fit`` anywhere and resume it with ``--ckpt_path last``: the run ends exactly where an
uninterrupted one does (weights, optimizer, schedule, best score, collapse history). SIGTERM/SIGUSR1 save and
exit 128 + signal; the resumed fit continues the same W&B run. Between them the three runs resume from a
mid-epoch checkpoint (SIGTERM at step 5, SIGKILL in epoch 0's validation) and from an epoch-end one (SIGKILL
while the step-6 checkpoint is written, with TMPDIR on another filesystem where the machine has one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from i2p.checkpoint_file import check_checkpoint
from i2p.cli.lightning import run_lightning
from i2p.io import stale_temp_files
from tests.helpers.classifier import write_config
from tests.helpers.runs import assert_same_run, run_i2p, tail

# 16 shapes, batch 4: 4 steps per epoch, 2 epochs; `last` every 2 steps (steps 2, 4 after validation, 6, 8)
FLAGS = ["--trainer.max_epochs", "2", "--checkpoint.every_n_train_steps", "2",
         "--trainer.callbacks+=callbacks.NeuralCollapse"]
FAULT = "--trainer.callbacks+=tests.helpers.faults.KillAt"


def _config(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return write_config(folder, regime="io", data={"num_train": 16, "batch_size": 4})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in this process: one thread, like the subprocesses)."""
    cfg = _config(tmp_path_factory.mktemp("reference"), "run")
    run_lightning(["fit", "--config", str(cfg), *FLAGS])
    return cfg.parent / "ckpt" / "last.ckpt"


def _other_filesystem_tmpdir(tmp_path: Path) -> Path:
    """A TMPDIR on another filesystem than the checkpoints when the machine has one (/dev/shm), else a
    separate folder: either way nothing may be written there.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        return Path(tempfile.mkdtemp(dir=shm, prefix="i2p-test-"))
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("where, step", [("validation", 4), ("save", 6)],
                         ids=["in-validation-resumes-mid-epoch", "during-checkpoint-write"])
def test_sigkill_anywhere_then_resume_exactly(tmp_path, reference, where, step, request):
    cfg = _config(tmp_path, where)
    ckpts = cfg.parent / "ckpt"
    tmpdir = _other_filesystem_tmpdir(tmp_path)
    request.addfinalizer(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    killed = run_i2p(["fit", "--config", str(cfg), *FLAGS, FAULT, "--trainer.callbacks.step", str(step),
                      "--trainer.callbacks.where", where], tmp_path, I2P_FAULT="1", TMPDIR=str(tmpdir))
    assert killed.returncode == -9, tail(killed)
    check_checkpoint(ckpts / "last.ckpt")  # whole, whatever the moment of the kill
    if where == "save":
        assert stale_temp_files(ckpts, "last.ckpt"), "the cut write should have left its temporary file"
        big = [p for p in tmpdir.rglob("*") if p.is_file() and p.stat().st_size > 1_000_000]
        assert not big, f"checkpoint data staged in TMPDIR: {big}"
    run_lightning(["fit", "--config", str(cfg), *FLAGS, "--ckpt_path", "last"])
    assert stale_temp_files(ckpts) == []
    assert_same_run(reference, ckpts / "last.ckpt")


@pytest.mark.slow
def test_sigterm_saves_exits_143_and_resumes_mid_epoch_in_the_same_wandb_run(tmp_path, reference, monkeypatch):
    sig, status = "SIGTERM", 143  # SIGUSR1 (138) in tests/callbacks/test_checkpoint.py
    cfg = _config(tmp_path, sig)
    monkeypatch.chdir(tmp_path)
    wandb = ["--trainer.logger", "i2p.cli.logger.WandbLogger", "--trainer.logger.save_dir", str(tmp_path / "runs")]
    signal_at = ["--trainer.callbacks+=tests.helpers.faults.SignalAt", "--trainer.callbacks.step", "5",
                 "--trainer.callbacks.signal", sig]
    stopped = run_i2p(["fit", "--config", str(cfg), *FLAGS, *wandb, *signal_at], tmp_path, I2P_FAULT="1")
    assert stopped.returncode == status, tail(stopped)
    assert f"{sig}: saved" in stopped.stderr + stopped.stdout
    saved = torch.load(cfg.parent / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 6  # the batch in flight finished first
    first_id = saved["i2p_run"]["wandb_id"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = run_lightning(["fit", "--config", str(cfg), *FLAGS, *wandb, "--ckpt_path", "last"])
    import wandb as wb

    try:
        assert cli.trainer.logger.version == first_id  # the same W&B run continues
    finally:
        wb.finish()
    assert_same_run(reference, cfg.parent / "ckpt" / "last.ckpt")
