"""Bad input to the ``i2p`` command, table-driven: the last line printed is one clear error (``i2p <cmd>:
error: ...``) naming what was wrong, with exit status 2 and no traceback; jsonargparse's Union report and
Lightning's silent fallbacks never have the last word (a message of several lines stays one block).

A row: ``Row(id, args, expect, setup)``; ``setup(tmp_path)`` writes what the command needs and returns
the values ``{name}`` placeholders in ``args`` take (``cfg``, the tiny config, is always there). The
readers' rows are in tests/data/test_bad_input.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from i2p.cli import main
from tests.helpers.classifier import CLASSES, write_config


@dataclass(frozen=True)
class Row:
    id: str
    args: list[str]
    expect: str
    setup: Callable[[Path], dict[str, str]] = field(default=lambda tmp: {})
    slow: bool = False


def _hparams(**over):
    hp = {"_class_path": "models.PointClassifier", "backbone": "resnet18", "regime": "all", "stem": "new",
          "head": "linear_bn", "in_channels": 3, "num_classes": len(CLASSES), "class_names": CLASSES,
          "inflate": {"kernel_mode": "copy", "depth_axis": "y", "shortcut": "repeat"}, "pretrained": False}
    hp.update(over)
    return hp


def _ckpt(tmp: Path, name: str = "run.ckpt", **hparams) -> Path:
    path = tmp / "ckpts" / name
    path.parent.mkdir(exist_ok=True)
    torch.save({"hyper_parameters": _hparams(**hparams), "state_dict": {}, "epoch": 0, "global_step": 0}, path)
    return path


def _cut(tmp: Path) -> dict[str, str]:
    good = _ckpt(tmp, "good.ckpt")
    cut = tmp / "ckpts" / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:200])
    return {"ckpt": str(cut)}


def _empty(tmp: Path) -> dict[str, str]:
    _ckpt(tmp, "good.ckpt")
    (tmp / "ckpts" / "empty.ckpt").write_bytes(b"")
    return {"ckpt": str(tmp / "ckpts" / "empty.ckpt")}


def _pickle(tmp: Path) -> dict[str, str]:
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    path = tmp / "evil.ckpt"
    torch.save({"hyper_parameters": _hparams(), "x": Payload()}, path)
    return {"ckpt": str(path)}


def _named_runs(tmp: Path) -> dict[str, str]:
    """A config without a checkpoint folder (runs/<name>/checkpoints) and a run 'demo' that has one."""
    cfg = yaml.safe_load((tmp / "tiny.yaml").read_text())
    del cfg["checkpoint"]
    (tmp / "named.yaml").write_text(yaml.safe_dump(cfg))
    _ckpt(tmp, "last.ckpt").rename(_mkdir(tmp / "runs" / "demo" / "checkpoints") / "last.ckpt")
    return {"named": str(tmp / "named.yaml")}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wrong_weights(tmp: Path) -> dict[str, str]:
    path = tmp / "resnet_2d.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)}, path)
    return {"weights": str(path)}


ROWS = [
    Row("voxel-size", ["fit", "--config", "{cfg}", "--data.init_args.voxel_size", "-1"],
        r"voxel_size must be > 0, got -1"),
    Row("batch-size-0", ["fit", "--config", "{cfg}", "--data.init_args.batch_size", "0"], "batch_size must be >= 1"),
    Row("batch-size-type", ["fit", "--config", "{cfg}", "--data.init_args.batch_size", "abc"],
        r'Parser key "batch_size": Expected a <class .int.>\. Got value: abc'),
    Row("unknown-backbone", ["fit", "--config", "{cfg}", "--model.init_args.backbone", "resnet999"],
        "unknown model 'resnet999'; known: resnet18"),
    Row("unknown-regime", ["fit", "--config", "{cfg}", "--model.init_args.regime", "fip"],
        r"Parser key \"regime\": Expected a typing.Literal\['io', 'ioms', 'iobn', 'all', 'scratch'\]. Got value: fip"),
    Row("unknown-flag", ["fit", "--config", "{cfg}", "--trainer.max_epoks", "3"], "unrecognized arguments"),
    Row("missing-config", ["fit", "--config", "{tmp}/nope.yaml"], "File does not exist"),
    Row("missing-2d-weights", ["fit", "--config", "{cfg}", "--model.init_args.pretrained", "{tmp}/gone.pth"],
        "checkpoint file not found: .*gone.pth", slow=True),
    Row("wrong-shape-weights", ["fit", "--config", "{cfg}", "--model.init_args.pretrained", "{weights}"],
        r"cannot transfer .*resnet_2d.pth into resnet18: shape mismatches", _wrong_weights, slow=True),
    Row("ckpt-missing", ["test", "--config", "{cfg}", "--ckpt_path", "{tmp}/nope.ckpt"],
        "nope.ckpt: checkpoint file not found"),
    Row("ckpt-truncated", ["test", "--config", "{cfg}", "--ckpt_path", "{ckpt}"],
        r"cut.ckpt: not a readable torch checkpoint .*truncated or corrupt.*readable checkpoints beside it.*good.ckpt",
        _cut),
    Row("ckpt-empty", ["fit", "--config", "{cfg}", "--ckpt_path", "{ckpt}"],
        r"empty.ckpt: checkpoint file is empty .*good.ckpt", _empty),
    Row("ckpt-pickle", ["test", "--config", "{cfg}", "--ckpt_path", "{ckpt}"],
        "evil.ckpt: refused to unpickle it.*GLOBAL posix.system", _pickle),
    Row("ckpt-architecture", ["test", "--config", "{cfg}", "--ckpt_path", "{ckpt}", "--model.init_args.backbone",
                              "resnet34"],
        r"backbone='resnet34' asked for, but the checkpoint has backbone='resnet18'",
        lambda tmp: {"ckpt": str(_ckpt(tmp))}),
    Row("ckpt-inflation", ["test", "--config", "{cfg}", "--ckpt_path", "{ckpt}", "--model.init_args.inflate.depth_axis",
                           "z"],
        r"inflate=.*'depth_axis': 'z'.* but the checkpoint has inflate=.*'depth_axis': 'y'",
        lambda tmp: {"ckpt": str(_ckpt(tmp))}),
    Row("ckpt-classes", ["test", "--config", "{cfg}", "--ckpt_path", "{ckpt}"],
        r"was trained on the classes \['w', 'x', 'y', 'z'\], but the data has \['sphere'",
        lambda tmp: {"ckpt": str(_ckpt(tmp, class_names=["w", "x", "y", "z"]))}, slow=True),
    Row("last-misspelt-name", ["fit", "--config", "{named}", "--name", "dem", "--ckpt_path", "last"],
        r"no checkpoint of run 'dem' in runs/dem/checkpoints.*Did you mean 'demo'\?.*--allow_fresh true",
        _named_runs),
]


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id) for r in ROWS])
def test_bad_command_ends_with_one_clear_error(tmp_path, monkeypatch, capsys, row):
    monkeypatch.chdir(tmp_path)
    values = {"cfg": str(write_config(tmp_path)), "tmp": str(tmp_path), **row.setup(tmp_path)}
    args = [a.format(**values) for a in row.args]
    try:
        status = main(args)
    except SystemExit as e:  # parse errors exit from inside jsonargparse
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    starts = [m.start() for m in re.finditer(rf"^i2p {args[0]}: error: ", err, flags=re.M)]
    assert starts, err[-3000:]
    last = err[starts[-1]:]  # the error is the last thing printed (a multi-line message stays one block)
    assert "Union subtypes" not in last, last
    assert re.search(row.expect, last, flags=re.S), f"{row.id}: {last!r} does not match {row.expect!r}"
    assert not (tmp_path / "pwned").exists()
