"""The three callbacks in short CPU fits of the stand-in classifier (W&B offline, temp dirs)."""

import json
import math
import os

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from callbacks import NeuralCollapse, TimeToAccuracy, WandbMedia
from callbacks.neural_collapse import METRICS
from i2p.collapse import CollapseStats
from tests.helpers.toy import ToyClassifier, ToyData


@pytest.fixture(autouse=True)
def one_thread():
    """Two OpenMP threads on a loaded 2-core box are far slower than one; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").mkdir()


def _trainer(tmp_path, callbacks, loggers, epochs=2, **kw):
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=loggers, callbacks=callbacks,
        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=1, **kw,
    )  # fmt: skip


@pytest.mark.slow
def test_fit_with_all_callbacks_logs_everything(tmp_path, monkeypatch):
    logged = []
    original = WandbLogger.log_metrics
    monkeypatch.setattr(WandbLogger, "log_metrics", lambda self, metrics, step=None: (logged.append(dict(metrics)),
                                                                                      original(self, metrics, step))[1])
    csv = CSVLogger(str(tmp_path), name="run")
    wb = WandbLogger(project="i2p-test", save_dir=str(tmp_path), offline=True)
    nc = NeuralCollapse(every_n_epochs=1)
    tta = TimeToAccuracy(monitor="val/acc", thresholds=(0.3, 0.5, 1.01))
    media = WandbMedia(num_clouds=3, max_points=10)
    model, data = ToyClassifier(frozen_bn=True), ToyData()
    trainer = _trainer(tmp_path, [nc, media, tta], [wb, csv])  # W&B first, as the i2p CLI does
    trainer.fit(model, data)
    wb.experiment.finish()

    m = trainer.callback_metrics
    for split in ("train", "val"):
        for key in METRICS:
            assert f"nc/{split}/{key}" in m, f"nc/{split}/{key}"
        assert math.isfinite(float(m[f"nc/{split}/nc3"]))
    assert float(m["nc/train/num_samples"]) == len(data.train)
    assert float(m["nc/val/num_samples"]) == len(data.val)
    assert [e for e, _ in nc.history["train"]["nc1"]] == [0, 1] and nc.seconds
    # the frozen BN stayed in eval mode through the callback's eval pass, the rest went back to train
    assert model.frozen_modes and not any(model.frozen_modes) and model.body.training

    # train statistics equal an eval-mode pass over the training set with the final weights
    model.eval()
    ref = CollapseStats(4)
    with torch.no_grad():
        for batch in data.train_eval_dataloader():
            f, logits = model.extract(batch["x"])
            ref.update(f, batch["label"], logits.argmax(1))
    expect = ref.compute(classifier_weight=model.head_weight)
    for key in ("nc1", "cdnv", "ncc_mismatch", "nc3"):
        assert math.isclose(float(m[f"nc/train/{key}"]), expect[key], rel_tol=1e-5), key

    run_dir = os.path.join(str(tmp_path), "i2p-test", wb.version)  # per run, beside checkpoints/
    assert os.path.isdir(os.path.join(run_dir, "checkpoints"))
    assert os.path.getsize(os.path.join(run_dir, "neural_collapse.png")) > 1000
    with open(os.path.join(run_dir, "time_to_accuracy.json")) as f:
        report = json.load(f)
    assert report["monitor"] == "val/acc" and report["thresholds"]["1.01"] is None
    first = report["thresholds"]["0.3"]
    assert first["epoch"] == 0 and first["seconds"] > 0 and first["value"] >= 0.3
    for field in ("epoch", "step", "seconds"):
        assert f"tta/val/acc@0.3/{field}" in m
    assert "tta/val/acc@1.01/epoch" not in m

    media_logs = [d for d in logged if "media/confusion_matrix" in d]
    assert len(media_logs) == 2  # one per epoch, not during the sanity check
    keys = set(media_logs[0])
    assert {"media/cloud0/truth", "media/cloud2/pred", "media/per_class_accuracy"} <= keys
    assert "media/cloud3/truth" not in keys
    table = media_logs[-1]["media/per_class_accuracy"]
    assert sum(row[2] for row in table.data) == len(data.val)
    assert any("nc/curves" in d for d in logged)


def test_media_without_wandb_is_a_no_op(tmp_path):
    media = WandbMedia()
    trainer = _trainer(tmp_path, [media, NeuralCollapse(splits=("val",), plot=False)], [CSVLogger(str(tmp_path))],
                       epochs=1)
    trainer.fit(ToyClassifier(), ToyData())
    assert not media._clouds and not media._active(trainer) and "nc/val/nc1" in trainer.callback_metrics
    assert "nc/train/nc1" not in trainer.callback_metrics


def test_every_n_epochs_and_train_batch_cap(tmp_path):
    nc = NeuralCollapse(every_n_epochs=2, max_train_batches=2, plot=False)
    trainer = _trainer(tmp_path, [nc], False, epochs=3)
    trainer.fit(ToyClassifier(), ToyData())
    assert [e for e, _ in nc.history["val"]["nc1"]] == [1]
    assert nc.history["train"]["num_samples"][0][1] == 16  # 2 batches of 8


def test_time_to_accuracy_survives_resume(tmp_path):
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    tta = TimeToAccuracy(monitor="val/acc", thresholds=(0.3, 1.01))
    _trainer(tmp_path, [tta, ckpt], False, epochs=2).fit(ToyClassifier(), ToyData())
    before = dict(tta.reached["0.3"])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"][tta.state_key]

    resumed = TimeToAccuracy(monitor="val/acc", thresholds=(0.3, 1.01))
    trainer = _trainer(tmp_path, [resumed], False, epochs=3)
    trainer.fit(ToyClassifier(), ToyData(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.reached["0.3"] == before  # the original epoch/step/seconds, not re-measured
    assert resumed.elapsed() > saved["elapsed"] > before["seconds"]
    with open(tmp_path / "time_to_accuracy.json") as f:
        report = json.load(f)
    assert report["thresholds"]["0.3"] == before and report["elapsed_seconds"] > saved["elapsed"]
    assert float(trainer.callback_metrics["tta/val/acc@0.3/step"]) == before["step"]
    fresh = TimeToAccuracy(monitor="val/acc", thresholds=(0.0,))
    _trainer(tmp_path, [fresh], False).validate(ToyClassifier(), ToyData())
    assert fresh.reached == {}  # validate() alone is not a point in training time


def test_time_to_accuracy_min_mode_and_bad_mode():
    with pytest.raises(ValueError):
        TimeToAccuracy(mode="up")
    t = TimeToAccuracy(monitor="val/loss", thresholds=(1.0,), mode="min")
    assert "val/loss" in t.state_key and t.elapsed() == 0.0


def test_time_to_accuracy_compares_in_the_metric_precision():
    class _Strategy:
        @staticmethod
        def broadcast(obj, src=0):
            return obj

    class _Trainer:
        callback_metrics = {"val/acc": torch.tensor(7 / 10, dtype=torch.float32)}  # 0.69999999 in float32
        strategy, current_epoch, global_step, is_global_zero = _Strategy(), 3, 30, False

    tta = TimeToAccuracy(monitor="val/acc", thresholds=(0.7, 0.71))
    tta._check(_Trainer())
    assert set(tta.reached) == {"0.7"} and tta.reached["0.7"]["epoch"] == 3
