"""``i2p fit ... --ckpt_path last`` resumes a stopped run: epoch counter, step, optimizer and schedule."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch

from i2p.cli.lightning import run_lightning
from tests.helpers.classifier import write_config


class RecordStart(pl.Callback):
    """What the trainer holds when (re)starting to train."""

    def on_train_start(self, trainer, pl_module):
        self.epoch, self.step = trainer.current_epoch, trainer.global_step
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.slow
def test_resume_from_last(tmp_path):
    cfg = write_config(tmp_path, data={"num_train": 16})
    first = run_lightning(["fit", "--config", str(cfg), "--trainer.max_epochs", "1"])
    steps = first.trainer.global_step
    assert steps == 2
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == steps

    rec = RecordStart()
    second = run_lightning(["fit", "--config", str(cfg), "--trainer.max_epochs", "2", "--ckpt_path", "last"],
                           trainer_defaults={"callbacks": [rec]})
    assert (rec.epoch, rec.step) == (1, steps)
    momentum = saved["optimizer_states"][0]["state"]
    assert momentum and rec.optimizer["state"].keys() == momentum.keys()
    for k in momentum:
        torch.testing.assert_close(rec.optimizer["state"][k]["momentum_buffer"], momentum[k]["momentum_buffer"])
    assert rec.lr < 0.05  # the cosine schedule continued (max_epochs 2 now), not restarted at the base lr
    assert second.trainer.current_epoch == 2 and second.trainer.global_step == 2 * steps
