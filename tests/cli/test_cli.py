"""The ``i2p`` command: extra sub-commands, W&B offline default, argument links, checkpoints, test."""

from __future__ import annotations

import pytest
import torch

from i2p.cli import main
from i2p.cli.lightning import parse_config, run_lightning
from tests.helpers.classifier import CLASSES, tiny_pretrained_2d, write_config
from tests.helpers.hub import unreachable_hub


def test_help_lists_trainer_and_extra_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("fit", "validate", "test", "predict", "pretrain2d", "inflate", "demo"):
        assert cmd in out


def test_help_lists_extra_commands_one_per_line(capsys):
    from i2p.cli.main import EXTRA_COMMANDS

    with pytest.raises(SystemExit):
        main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for name, (_, help_) in EXTRA_COMMANDS.items():
        assert any(line.split() == ["i2p", name, *help_.split()] for line in lines), name


def test_fit_without_hub_fails_fast_with_a_hint(tmp_path, monkeypatch, capsys):
    import timm

    unreachable_hub(monkeypatch, tmp_path)
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: pytest.fail("timm asked the hub"))
    cfg = write_config(tmp_path, pretrained=True, regime="io")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(cfg)])
    message = str(exc.value.code)
    assert message.startswith("i2p fit: pretrained: true needs timm's weights for 'resnet18'")
    assert "HF_HUB_OFFLINE=1" in message and "pretrained: false" in message and "Traceback" not in message


def test_a_typo_fails_at_parse_time_with_the_choices(tmp_path, capsys):
    cfg = write_config(tmp_path)
    for flag, value, choices in (("--model.init_args.regime", "fip_io", "ioms"),
                                 ("--model.init_args.inflate.kernel_mode", "copyy", "center"),
                                 ("--model.init_args.scheduler", "cosin", "poly")):
        with pytest.raises(SystemExit):
            parse_config(["fit", "--config", str(cfg), flag, value])
        err = capsys.readouterr().err
        assert value in err and choices in err, err[-500:]


def test_fit_logs_offline_wandb_and_checkpoints_then_test_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = write_config(tmp_path, pretrained=str(tiny_pretrained_2d()), regime="io", wandb=True, limit_train_batches=2)
    cli = run_lightning(["fit", "--config", str(cfg), "--name", "tiny",
                         "--trainer.logger.init_args.tags", "[smoke, cpu]"])
    import wandb

    logger = cli.trainer.logger
    init = logger._wandb_init  # the runs of one experiment: one group, each saying what it is
    assert (init["group"], init["job_type"], init["tags"]) == ("tiny", "fit", ["smoke", "cpu"])
    config = logger.experiment.config  # the data settings flattened, one column each
    assert config["data/voxel_size"] == 0.25 and config["data/class"] == "datamodules.SyntheticShapes"
    assert config["data/classes"] == CLASSES
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
    saved = torch.load(best[0], map_location="cpu", weights_only=True)
    assert saved["i2p_run"]["name"] == "tiny" and saved["i2p_run"]["wandb_id"] == logger.version
    hparams = saved["hyper_parameters"]
    assert hparams["num_classes"] == len(CLASSES) and hparams["class_names"] == CLASSES  # linked from data

    # the checkpoint holds the weights: a missing 2D file must not matter when testing it
    missing = ["--model.init_args.pretrained", str(tmp_path / "gone.pth")]
    other = ["--data.init_args.voxel_size", "0.5"]  # the checkpoint's preprocessing wins over the config's
    cli = run_lightning(["test", "--config", str(cfg), "--name", "tiny", "--ckpt_path", str(best[0]), *missing,
                         *other])
    assert cli.datamodule.voxel_size == 0.25
    init = cli.trainer.logger._wandb_init
    assert (init["group"], init["job_type"]) == ("tiny", "test")  # beside the fit run, not an unlinked one
    wandb.finish()
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/acc"]) <= 1.0 and "test/macc" in metrics and "test/loss" in metrics


@pytest.mark.slow
def test_demo_prints_one_summary_with_its_wall_time(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    small = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
             "--trainer.limit_test_batches", "1", "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false",
             "--data.init_args.num_train", "32", "--data.init_args.num_val", "8", "--data.init_args.num_test", "8"]
    assert main(["demo", "--pretrained", str(tiny_pretrained_2d()), *small]) == 0
    import wandb

    wandb.finish()
    out = capsys.readouterr().out
    assert out.count("[demo] ----") == 2 and "[i2p] ----" not in out  # the demo's block only, not fit's too
    for line in ("[demo] FIP-IO (regime ioms) on SyntheticShapes (12 classes", "[demo] test: test/acc 0.",
                 "[demo] checkpoints: best", "last.ckpt", "[demo] W&B run (offline)", "[demo] wall time"):
        assert line in out, line
