"""Two CPU DDP processes (gloo, ddp_spawn) log the same callback values as one process."""
import math

import pytest
import pytorch_lightning as pl
import torch

from callbacks import NeuralCollapse, TimeToAccuracy, WandbMedia
from callbacks.neural_collapse import METRICS
from tests.helpers.toy import ToyClassifier, ToyData


class Dump(pl.Callback):
    """Each rank saves what it logged, so the test can compare ranks, not only rank 0."""

    def __init__(self, out: str):
        self.out = out

    def on_fit_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save(metrics, f"{self.out}/rank{trainer.global_rank}.pt")


class FakeWandb:
    def __init__(self):
        self.payloads = []

    def log_metrics(self, metrics, step=None):
        self.payloads.append(metrics)


class MediaProbe(WandbMedia):
    """WandbMedia with a stand-in logger, to check its confusion counts are reduced over ranks."""

    def __init__(self, out: str):
        super().__init__(num_clouds=2)
        self.out, self.fake = out, FakeWandb()

    def _wandb_loggers(self, trainer):
        return [self.fake]

    def on_fit_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            table = self.fake.payloads[-1]["media/per_class_accuracy"]
            torch.save(sum(row[2] for row in table.data), f"{self.out}/media_support.pt")


def _fit(tmp_path, devices):
    out = tmp_path / f"d{devices}"
    out.mkdir()
    # lr 0 and no BN: identical weights in both runs, so only the reductions are under test
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_epochs=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out), num_sanity_val_steps=0,
        callbacks=[NeuralCollapse(), TimeToAccuracy(thresholds=(0.2,)), MediaProbe(str(out)), Dump(str(out))],
    )  # fmt: skip
    trainer.fit(ToyClassifier(lr=0.0, bn=False), ToyData())
    return out


@pytest.mark.ddp
def test_two_ranks_log_what_one_process_logs(tmp_path):
    one = torch.load(_fit(tmp_path, 1) / "rank0.pt")
    d2 = _fit(tmp_path, 2)
    r0, r1 = torch.load(d2 / "rank0.pt"), torch.load(d2 / "rank1.pt")
    keys = [f"nc/{s}/{k}" for s in ("train", "val") for k in METRICS]
    for k in keys:
        a, b, ref = r0[k], r1[k], one[k]
        assert a == b or (math.isnan(a) and math.isnan(b)), (k, a, b)  # identical on every rank
        assert math.isnan(ref) and math.isnan(a) or math.isclose(a, ref, rel_tol=1e-5, abs_tol=1e-9), (k, a, ref)
    assert r0["nc/val/num_samples"] == 23 and r0["nc/train/num_samples"] == 37
    assert r0["tta/val/acc@0.2/epoch"] == r1["tta/val/acc@0.2/epoch"]
    assert r0["tta/val/acc@0.2/seconds"] == r1["tta/val/acc@0.2/seconds"]
    assert torch.load(d2 / "media_support.pt") == 23 == torch.load(tmp_path / "d1" / "media_support.pt")
