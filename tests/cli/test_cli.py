"""The ``i2p`` command: extra sub-commands, W&B offline default, argument links, checkpoints, test."""

from __future__ import annotations

import pytest
import torch

from i2p.cli import main
from i2p.cli.lightning import run_lightning
from tests.helpers.classifier import CLASSES, tiny_pretrained_2d, write_config


def test_help_lists_trainer_and_extra_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("fit", "validate", "test", "predict", "pretrain2d", "inflate", "demo"):
        assert cmd in out


@pytest.mark.slow
def test_fit_logs_offline_wandb_and_checkpoints_then_test_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = write_config(tmp_path, pretrained=str(tiny_pretrained_2d()), regime="io", wandb=True, limit_train_batches=2)
    cli = run_lightning(["fit", "--config", str(cfg)])
    import wandb

    logger = cli.trainer.logger
    assert type(logger).__name__ == "WandbLogger" and logger._offline
    run_dir = tmp_path / logger.run_dir
    assert run_dir.is_dir() and run_dir.name.startswith("offline-run-")
    assert "seed_everything" in (run_dir / "files" / "i2p_config.yaml").read_text()
    assert logger._log_model is False  # offline: no staged checkpoint copies, but the paths are in the summary
    assert str(logger.experiment.summary["checkpoint/best"]).endswith(".ckpt")
    wandb.finish()

    ckpts = tmp_path / "ckpt"
    assert (ckpts / "last.ckpt").is_file()
    best = [p for p in ckpts.glob("best-*.ckpt")]
    assert len(best) == 1
    hparams = torch.load(best[0], map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["num_classes"] == len(CLASSES) and hparams["class_names"] == CLASSES  # linked from data

    # the checkpoint holds the weights: a missing 2D file must not matter when testing it
    missing = ["--model.init_args.pretrained", str(tmp_path / "gone.pth")]
    cli = run_lightning(["test", "--config", str(cfg), "--trainer.logger", "false", "--ckpt_path", str(best[0]),
                         *missing])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/acc"]) <= 1.0 and "test/macc" in metrics and "test/loss" in metrics
