"""Several nodes on one machine (gloo over loopback): the same config under ``torchrun --nnodes 2`` (two
agents, one process each) and ``--nnodes 1 --nproc-per-node 2`` ends with identical weights, metrics
and collapse statistics; after a worker is killed, the same command in fresh workers (what
``torchrun --max-restarts`` runs) resumes from ``last`` (``--ckpt_path last --allow_fresh true``) and ends
the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.classifier import write_config
from tests.helpers.runs import assert_same_run, i2p_env

FLAGS = ["--trainer.max_epochs", "2", "--checkpoint.every_n_train_steps", "1",
         "--trainer.callbacks+=callbacks.NeuralCollapse", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(torchrun_args: list[str], fit_args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, "-m", "i2p.cli", "fit", *fit_args]
    return subprocess.Popen(cmd, cwd=cwd, env=i2p_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun puts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _output(proc: subprocess.Popen, timeout: int) -> str | None:
    """The process's output, or None when it ran past ``timeout`` (it is then killed with its workers)."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        return None


def _wait(*procs: subprocess.Popen, timeout: int = 400) -> None:
    outputs = [_output(p, timeout) for p in procs]
    for p, out in zip(procs, outputs):
        assert out is not None and p.returncode == 0, (out or "timed out")[-4000:]


def _config(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    # 24 training shapes over 2 ranks, batch 4: 3 steps per epoch; 9 validation shapes: 5 and 4 per rank
    return write_config(folder, regime="io", data={"num_train": 24, "batch_size": 4, "num_val": 9})


@pytest.mark.ddp
def test_two_nodes_one_process_each_equal_one_node_two_processes_and_restarts_resume(tmp_path):
    one_node = _config(tmp_path, "one_node")
    port = _port()
    _wait(_torchrun(["--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                     str(port)], ["--config", str(one_node), *FLAGS, "--trainer.devices", "2"], tmp_path))

    two_nodes = _config(tmp_path, "two_nodes")
    port = _port()
    nodes = [_torchrun(["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--master-addr",
                        "127.0.0.1", "--master-port", str(port)],
                       ["--config", str(two_nodes), *FLAGS, "--trainer.devices", "1", "--trainer.num_nodes", "2"],
                       tmp_path) for rank in (0, 1)]
    _wait(*nodes)
    assert_same_run(one_node.parent / "ckpt" / "last.ckpt", two_nodes.parent / "ckpt" / "last.ckpt")

    restarted = _config(tmp_path, "restarted")
    kill = ["--trainer.callbacks+=tests.helpers.faults.KillAt", "--trainer.callbacks.step", "5",
            "--trainer.callbacks.rank", "1"]  # rank 1 dies mid-epoch 1, after the step-5 checkpoint
    command = (["--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "0", "--master-addr", "127.0.0.1"],
               ["--config", str(restarted), *FLAGS, "--trainer.devices", "2", *kill, "--ckpt_path", "last",
                "--allow_fresh", "true"])
    # what `torchrun --max-restarts N` does on a worker failure: the same command in fresh workers. The test runs
    # the restart as a second torchrun rather than the agent's own loop, which in torch 2.14 with gloo can hand
    # the new process group the dead attempt's addresses and fail or hang (pytorch/pytorch#167288)
    first = _torchrun([*command[0], "--master-port", str(_port())], command[1], tmp_path, I2P_FAULT="1")
    out = _output(first, timeout=420)
    assert out is not None and first.returncode != 0 and "starting it fresh" in out, (out or "timed out")[-4000:]
    saved = torch.load(restarted.parent / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    assert saved["global_step"] == 5
    again = _torchrun([*command[0], "--master-port", str(_port())], command[1], tmp_path)  # no fault now
    out = _output(again, timeout=420)
    assert out is not None and again.returncode == 0, (out or "timed out")[-4000:]
    assert "Restored all states" in out, out[-4000:]  # the restarted workers resumed from `last`
    assert_same_run(one_node.parent / "ckpt" / "last.ckpt", restarted.parent / "ckpt" / "last.ckpt")
