"""ResumeState: an extended run (max_epochs 1 -> 3) trains on the schedule of the new length, for a
LambdaLR (the project's) and a torch scheduler with a stored horizon; the global RNG comes back.
"""

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from callbacks.checkpoint import AtomicCheckpointIO, Checkpoint
from callbacks.resume import ResumeState, get_rng_state, set_rng_state
from models.optim import build_scheduler
from tests.helpers.toy import ToyClassifier, ToyData, collate

LR = 0.1


class Scheduled(ToyClassifier):
    def __init__(self, kind: str):
        super().__init__(lr=LR)
        self.kind = kind

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.kind == "lambda":
            sched = build_scheduler(opt, "cosine", self.trainer.max_epochs)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class InOrder(ToyData):
    def train_dataloader(self):
        return DataLoader(self.train, self.bs, shuffle=False, collate_fn=collate)


class LrAtEpochStart(pl.Callback):
    def __init__(self):
        self.lrs = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]


def fit(tmp_path, kind, epochs, ckpt_path=None, resume_state=True):
    lrs = LrAtEpochStart()
    callbacks = [Checkpoint(dirpath=tmp_path / "ckpt", save_last=True), lrs] + ([ResumeState()] if resume_state else [])
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
                         plugins=[AtomicCheckpointIO()])
    model = Scheduled(kind)
    trainer.fit(model, InOrder(), ckpt_path=ckpt_path)
    return model, lrs.lrs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lambda", "torch"])
def test_extending_a_finished_run_rebuilds_the_schedule(tmp_path, kind):
    full, full_lrs = fit(tmp_path / "full", kind, 3)
    fit(tmp_path / "ext", kind, 1)
    last = tmp_path / "ext" / "ckpt" / "last.ckpt"
    _, stale = fit(tmp_path / "stale", kind, 3, ckpt_path=last, resume_state=False)
    assert stale[1] == pytest.approx(0.0, abs=1e-12)  # what Lightning alone does: the finished schedule's lr 0
    extended, lrs = fit(tmp_path / "ext", kind, 3, ckpt_path=last)
    assert lrs[1] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi / 3)))  # the 3-epoch cosine, not 0
    assert lrs == pytest.approx({e: full_lrs[e] for e in (1, 2)})
    for (name, a), b in zip(full.state_dict().items(), extended.state_dict().values()):
        assert torch.equal(a, b), name  # the extended run is the 3-epoch run


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = get_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
