"""The cluster scripts are ready to run: valid bash, and the `i2p fit` command they build parses (with a
stand-in `srun` / environment, printing the config instead of training).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.runs import REPO, i2p_env

SCRIPTS = REPO / "docs" / "cluster"


@pytest.mark.parametrize("name", ["sbatch_fit.sh", "torchrun_fit.sh"])
def test_script_is_valid_bash(name):
    subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True)


@pytest.mark.slow
def test_sbatch_command_parses(tmp_path):
    srun = tmp_path / "srun"  # drop srun's own options, run the rest
    srun.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    srun.chmod(0o755)
    env = i2p_env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", I2P=f"{sys.executable} -m i2p.cli",
                  SLURM_NTASKS_PER_NODE="4", SLURM_NNODES="2", SLURM_CPUS_PER_TASK="1")
    proc = subprocess.run(["bash", str(SCRIPTS / "sbatch_fit.sh"), "--print_config"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("num_nodes: 2", "devices: '4'", "strategy: ddp", "allow_fresh: true", "ckpt_path: last"):
        assert line in proc.stdout, line
