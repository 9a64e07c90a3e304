"""Run ``i2p`` as a subprocess (to kill it) and compare two runs' final checkpoints exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def i2p_env(**extra: str) -> dict[str, str]:
    """The environment of a CPU test subprocess: this checkout first on the path, one thread, W&B offline."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1",
               WANDB_MODE="offline", WANDB_SILENT="true")
    env.pop("WANDB_SERVICE", None)  # this process's wandb service: a killed child must not leave runs in it
    env.update(extra)
    return env


def run_i2p(args: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """``python -m i2p.cli ARGS`` in ``cwd``; returns the finished process (any exit status)."""
    return subprocess.run([sys.executable, "-m", "i2p.cli", *args], cwd=cwd, env=i2p_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def tail(proc: subprocess.CompletedProcess, n: int = 3000) -> str:
    return f"rc {proc.returncode}\n{proc.stdout[-n:]}\n{proc.stderr[-n:]}"


def _callback(ckpt: dict, prefix: str) -> dict:
    return next((v for k, v in ckpt["callbacks"].items() if k.startswith(prefix)), {})


def assert_same_run(reference: Path, other: Path) -> None:
    """Same step, weights, optimizer state, schedule, best score and neural-collapse history, bit for bit."""
    a = torch.load(reference, map_location="cpu", weights_only=True)
    b = torch.load(other, map_location="cpu", weights_only=True)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} of {len(a['state_dict'])} weight tensors differ: {differ[:5]}"
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        assert [g["lr"] for g in oa["param_groups"]] == [g["lr"] for g in ob["param_groups"]]
        for key, state in oa["state"].items():
            for name, value in state.items():
                assert torch.equal(value, ob["state"][key][name]), (key, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    ca, cb = _callback(a, "ModelCheckpoint"), _callback(b, "ModelCheckpoint")
    assert ca.get("best_model_score") == cb.get("best_model_score")
    na, nb = _callback(a, "NeuralCollapse"), _callback(b, "NeuralCollapse")
    assert repr(na.get("history")) == repr(nb.get("history"))  # repr: NaN (undefined statistics) equals itself
