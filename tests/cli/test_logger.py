"""The W&B mode decision: WANDB_MODE first, then credentials (wandb's own auth API, its configured
host), then a quick reachability probe; an online init that fails falls back to offline.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest

from i2p.cli import logger as lg

KEY = "k" * 40


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    """A HOME without wandb credentials and no W&B variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("NETRC", "WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_no_key_means_offline(clean_home):
    assert not lg.wandb_has_credentials()
    mode, reason = lg.wandb_mode(reachable=lambda: pytest.fail("no probe without credentials"))
    assert mode == "offline" and "no W&B credentials" in reason


def test_wandb_login_under_its_default_host_counts(clean_home):
    host = urlparse(lg.wandb_base_url()).hostname
    (clean_home / ".netrc").write_text(f"machine {host}\n  login user\n  password {KEY}\n")
    (clean_home / ".netrc").chmod(0o600)
    assert lg.wandb_has_credentials()
    assert lg.wandb_mode(reachable=lambda: True) == ("online", "logged in")


def test_a_key_for_another_host_does_not_count(clean_home):
    (clean_home / ".netrc").write_text(f"machine elsewhere.example.org\n  login user\n  password {KEY}\n")
    assert not lg.wandb_has_credentials()


def test_logged_in_without_network_goes_offline_at_once(clean_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert lg.wandb_has_credentials()
    mode, reason = lg.wandb_mode(reachable=lambda: False)
    assert mode == "offline" and "unreachable" in reason


def test_reachability_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert lg.wandb_reachable(f"https://127.0.0.1:{port}", timeout=2)
    assert not lg.wandb_reachable(f"https://127.0.0.1:{port}", timeout=2)  # closed now: refused at once


@pytest.mark.parametrize("env, mode", [("disabled", "disabled"), ("offline", "offline"), ("dryrun", "offline"),
                                       ("online", "online")])
def test_wandb_mode_variable_wins(env, mode):
    probes = dict(has_credentials=lambda: pytest.fail("no probe"), reachable=lambda: pytest.fail("no probe"))
    assert lg.wandb_mode(offline=True if mode == "online" else False, env={"WANDB_MODE": env}, **probes)[0] == mode


def test_disabled_logger_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = lg.WandbLogger(save_dir=str(tmp_path / "runs"))
    assert logger.mode == "disabled" and logger._log_model is False
    try:
        logger.log_metrics({"a": 1.0})
        assert list((tmp_path / "runs").iterdir()) == []
    finally:
        import wandb

        wandb.finish()


@pytest.mark.slow
def test_online_init_failure_falls_back_to_offline(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(lg, "wandb_reachable", lambda *a, **k: True)
    real_init = wandb.init

    def init(**kwargs):
        import os

        if os.environ.get("WANDB_MODE") != "dryrun":
            raise wandb.errors.CommError("network unreachable (simulated)")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    logger = lg.WandbLogger(save_dir=str(tmp_path))
    assert logger.mode == "online"
    with pytest.warns(UserWarning, match="logging offline instead"):
        run = logger.experiment
    try:
        assert logger.mode == "offline" and run.settings.mode in ("offline", "dryrun")
    finally:
        wandb.finish()
        monkeypatch.delenv("WANDB_MODE", raising=False)


def test_offline_run_leaves_the_environment_alone(clean_home, monkeypatch):
    import os

    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = lg.WandbLogger(save_dir=str(clean_home / "runs"), project="i2p-test")
    assert logger.mode == "offline"
    try:
        run = logger.experiment
        assert run is not None and run.settings.mode in ("offline", "dryrun")
        assert "WANDB_MODE" not in os.environ  # wandb warns about any variable changed after its setup
    finally:
        wandb.finish()
