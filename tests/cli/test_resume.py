"""``i2p fit ... --ckpt_path last`` resumes a stopped run: epoch counter, step, optimizer and schedule."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

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


def test_run_name_defaults_to_the_run_file(tmp_path):
    from i2p.cli.configs import shipped
    from i2p.cli.lightning import parse_config
    from i2p.cli.resume import default_run_name

    assert default_run_name([shipped("experiments/modelnet40/io_resnet18.yaml")]) == "modelnet40/io_resnet18"
    assert default_run_name([tmp_path / "a" / "my_run.yaml"]) == "my_run"
    assert default_run_name([]) is None
    cfg = yaml.safe_load(write_config(tmp_path).read_text())
    del cfg["checkpoint"]
    (tmp_path / "sweep_a.yaml").write_text(yaml.safe_dump(cfg))
    parsed = parse_config(["fit", "--config", str(tmp_path / "sweep_a.yaml")]).fit
    assert parsed.name == "sweep_a" and parsed.checkpoint.dirpath == str(Path("runs") / "sweep_a" / "checkpoints")


@pytest.mark.slow
def test_last_without_name_resumes_the_latest_run_of_its_config_from_the_checkpoint_alone(tmp_path, monkeypatch):
    import shutil

    from i2p.cli.resume import ResumeError
    from tests.helpers.classifier import tiny_pretrained_2d

    monkeypatch.chdir(tmp_path)
    weights = shutil.copy(tiny_pretrained_2d(), tmp_path / "resnet18_2d.pth")
    written = write_config(tmp_path, pretrained=str(weights), regime="io", data={"num_train": 16})
    cfg = yaml.safe_load(written.read_text())
    del cfg["checkpoint"]  # no name, no folder: both from the file name
    path = tmp_path / "unnamed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ResumeError, match="no checkpoint of run 'unnamed'.*--allow_fresh"):
        run_lightning(["fit", "--config", str(path), "--ckpt_path", "last"])
    first = run_lightning(["fit", "--config", str(path), "--ckpt_path", "last", "--allow_fresh", "true"])
    assert first.trainer.ckpt_path is None  # started fresh
    last = tmp_path / "runs" / "unnamed" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    Path(weights).unlink()  # resuming reads nothing but the checkpoint (no 2D weights, no hub)
    second = run_lightning(["fit", "--config", str(path), "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert Path(second.trainer.ckpt_path).resolve() == last.resolve()
    assert second.trainer.global_step == 2 * first.trainer.global_step
