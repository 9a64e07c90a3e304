"""The bad-input tables' size, and how many of their rows needed a fix (they fail on an older revision).

Counts the rows of tests/data/test_bad_input.py (readers: refused inputs, repaired caches, the
absurd-scale check) and tests/cli/test_bad_input.py (the command). With ``--against REV`` it exports
that revision (``git archive``, no worktree), copies today's two table files into it and runs them
there: a row that fails on REV is one this branch had to fix. About a minute on 2 CPU cores.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bad_input_table.py [--against f22a6a0]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLES = ("tests/data/test_bad_input.py", "tests/cli/test_bad_input.py")


def _results(root: Path) -> dict[str, str]:
    """{test id: PASSED/FAILED/ERROR} of the two table files run under ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *TABLES],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    out = {}
    for status, test in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", proc.stdout, flags=re.M):
        out[test.split("::", 1)[1]] = status
    if not out:
        raise SystemExit(f"no results from {root}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--against", help="a git revision to run today's tables on (e.g. the branch point)")
    args = p.parse_args(argv)
    now = _results(REPO)
    kinds = {"readers: refused": "test_bad_input_is_named", "readers: repaired": "test_derived_files_are_repaired",
             "readers: scale": "test_absurd_scales", "command": "test_bad_command_ends_with_one_clear_error"}
    print(f"bad-input tables: {len(now)} rows, {sum(s == 'PASSED' for s in now.values())} pass here")
    for kind, prefix in kinds.items():
        print(f"  {kind:<18} {sum(t.startswith(prefix) for t in now)}")
    if not args.against:
        return
    with tempfile.TemporaryDirectory(prefix="i2p-bad-input-") as tmp:
        root = Path(tmp)
        archive = subprocess.run(["git", "archive", args.against], cwd=REPO, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
        for table in TABLES:
            shutil.copy(REPO / table, root / table)
        before = _results(root)
    fixed = sorted(t for t, s in now.items() if s == "PASSED" and before.get(t) != "PASSED")
    print(f"rows that fail on {args.against} and pass here (needed a fix): {len(fixed)} of {len(now)}")
    for t in fixed:
        print(f"  {t}")


if __name__ == "__main__":
    main()
