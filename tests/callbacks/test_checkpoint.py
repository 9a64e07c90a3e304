"""Checkpoint files: pickles refused through Lightning's CheckpointIO too, `last` never naming a
removed file, what a kill leaves cleaned on resume, SIGTERM -> a checkpoint and exit status 143.
"""

import os
import signal

import pytest
import pytorch_lightning as pl
import torch

from callbacks.checkpoint import AtomicCheckpointIO, Checkpoint, Preempted
from i2p.checkpoint_file import CheckpointError, load_checkpoint_file
from tests.helpers.toy import ToyClassifier, ToyData


def _write(path, payload=None):
    torch.save(payload if payload is not None else {"state_dict": {"w": torch.ones(2)}}, path)
    return path


def test_pickle_payload_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _write(tmp_path / "evil.ckpt", {"state_dict": {}, "x": Payload()})
    for load in (load_checkpoint_file, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CheckpointError, match="refused to unpickle"):
            load(path)
    assert not marker.exists()


def test_atomic_checkpoint_io_writes_beside_the_target(tmp_path, monkeypatch):
    import tempfile

    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr(tempfile, "tempdir", None)
    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": torch.arange(3)}, tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "ckpt" / "last.ckpt")["a"], torch.arange(3))
    assert list(elsewhere.iterdir()) == [] and [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.ckpt"]


class Killed(Exception):
    pass


class DiesBeforeLast(Checkpoint):
    """Stands for a kill after a new best file is written and before `last` is rewritten."""

    die_at_epoch = 1

    def _save_last_checkpoint(self, trainer, monitor_candidates):
        if trainer.current_epoch == self.die_at_epoch and self._pending:
            raise Killed
        super()._save_last_checkpoint(trainer, monitor_candidates)


class Improving(ToyClassifier):
    """val/acc rises every epoch, so every epoch writes a new best file and supersedes the last one."""

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        self.log("val/acc", float(self.current_epoch))


def _fit(tmp_path, cls, epochs, ckpt_path=None):
    cb = cls(dirpath=tmp_path, monitor="val/acc", mode="max", save_top_k=1, save_last=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[cb],
                         plugins=[AtomicCheckpointIO()])
    trainer.fit(Improving(), ToyData(), ckpt_path=ckpt_path)
    return cb


def test_last_never_names_a_removed_file_and_resume_cleans_up(tmp_path):
    with pytest.raises(Killed):
        _fit(tmp_path, DiesBeforeLast, 3)
    state = next(v for k, v in torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"].items()
                 if k.startswith("ModelCheckpoint"))
    assert os.path.isfile(state["best_model_path"])  # Lightning removes it right after the new best is written
    assert len(list(tmp_path.glob("best*.ckpt")) + list(tmp_path.glob("epoch*.ckpt"))) == 2  # old best + orphan
    cb = _fit(tmp_path, Checkpoint, 3, ckpt_path=tmp_path / "last.ckpt")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["last.ckpt", os.path.basename(cb.best_model_path)]), names  # no -v1, nothing stale
    assert "epoch=2" in cb.best_model_path


class SendsSignal(pl.Callback):
    def __init__(self, signum):
        self.signum = signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 6:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_preemption_signal_saves_last_and_exits_128_plus_signal(tmp_path, signum, status, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # no requeue outside SLURM
    cb = Checkpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=5, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[cb, SendsSignal(signum)])
    before = signal.getsignal(signum)
    with pytest.raises(Preempted) as e:
        trainer.fit(ToyClassifier(), ToyData())
    assert isinstance(e.value, SystemExit) and e.value.code == status
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 7  # the batch in flight finished, then the checkpoint, then the exit
    assert signal.getsignal(signum) == before  # handlers handed back
