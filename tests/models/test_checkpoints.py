"""Self-contained checkpoints: a full one loads without the 2D weights; a slim one round-trips and
refuses other source weights.
"""

from __future__ import annotations

import shutil

import pytest
import pytorch_lightning as pl
import torch

from models import PointClassifier
from models.weights import SLIM_KEY
from tests.helpers.classifier import tiny_data, tiny_pretrained_2d


def fit_and_save(tmp_path, slim: bool, regime: str = "io"):
    """One training step from a copy of the tiny 2D weights; returns (model, checkpoint, 2D file)."""
    source = tmp_path / "weights_2d.pth"
    shutil.copy(tiny_pretrained_2d(), source)
    dm = tiny_data()
    model = PointClassifier(num_classes=dm.num_classes, class_names=dm.class_names, regime=regime,
                            pretrained=str(source), slim_checkpoint=slim)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / ("slim.ckpt" if slim else "full.ckpt")
    trainer.save_checkpoint(ckpt)
    return model, ckpt, source


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)


@pytest.mark.slow
def test_full_checkpoint_loads_without_the_2d_weights(tmp_path, monkeypatch):
    model, ckpt, source = fit_and_save(tmp_path, slim=False)
    source.unlink()  # the 2D file is gone ...
    monkeypatch.chdir(tmp_path / "..")  # ... and the working directory is another one
    loaded = PointClassifier.load_from_checkpoint(ckpt)
    assert_same_state(model, loaded)
    assert loaded.hparams.pretrained == str(source) and loaded.class_names == model.class_names  # recorded
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    prep = saved["datamodule_hyper_parameters"]  # the preprocessing it was trained with
    assert prep["voxel_size"] == 0.25 and prep["num_points"] == 256 and prep["features"] == "xyz"


@pytest.mark.slow
def test_slim_checkpoint_round_trip_and_refusal(tmp_path):
    model, ckpt, source = fit_and_save(tmp_path, slim=True)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    meta = saved[SLIM_KEY]
    assert set(meta["omitted"]) == set(model.slim_omitted_keys()) and meta["omitted"]
    assert not set(meta["omitted"]) & set(saved["state_dict"])
    kept = sum(v.numel() for v in saved["state_dict"].values())
    assert kept < 0.05 * sum(v.numel() for v in model.state_dict().values())  # FIP-IO: mostly frozen copies
    assert "backbone.layer1.0.bn1.running_mean" in saved["state_dict"]  # BN statistics stay

    loaded = PointClassifier.load_from_checkpoint(ckpt)  # rebuilt from the 2D weights, digest checked
    assert_same_state(model, loaded)
    fresh = PointClassifier(num_classes=4, class_names=model.class_names, regime="io", pretrained=str(source))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_test_batches=1)
    trainer.test(fresh, datamodule=tiny_data(), ckpt_path=ckpt)  # Lightning's own restore path
    assert_same_state(model, fresh)

    state = torch.load(source, weights_only=True)
    state["layer2.0.conv1.weight"] += 1e-3  # other 2D weights, same names and shapes
    torch.save(state, source)
    with pytest.raises(ValueError, match="slim checkpoint refused"):
        PointClassifier.load_from_checkpoint(ckpt)
    source.unlink()
    with pytest.raises(FileNotFoundError, match="weights_2d.pth"):
        PointClassifier.load_from_checkpoint(ckpt)
