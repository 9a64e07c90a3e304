"""Every YAML under configs/ loads through the i2p CLI parser (a config that does not load fails).

Run configs (those with a ``model``) are parsed as ``i2p fit --config``; the others are
sub-configs (data, trainer) and must be included by at least one run config, which parses them.
Nothing heavy is built: classes are imported and init_args type-checked; the DataModule is
instantiated (cheap, no files read) to check that ``num_classes`` links.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonargparse import Namespace

from i2p.cli.lightning import parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
RUN = [p for p in ALL if "model" in (yaml.safe_load(p.read_text()) or {})]
SUB = [p for p in ALL if p not in RUN]


def test_there_are_configs():
    names = {str(p.relative_to(CONFIGS)) for p in RUN}
    assert "demo.yaml" in names
    for regime in ("io", "iobn", "all", "scratch"):
        for net in ("resnet18", "resnet50"):
            assert f"modelnet40/{regime}_{net}.yaml" in names
            assert f"scanobjectnn/{regime}_{net}.yaml" in names


@pytest.mark.parametrize("path", RUN, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_run_config_parses(path):
    cfg = parse_config(["fit", "--config", str(path)]).fit
    assert cfg.model.class_path == "models.PointClassifier"
    assert cfg.data.class_path.startswith("datamodules.")
    assert cfg.trainer.logger is not None  # the W&B default survives includes
    assert cfg.checkpoint.dirpath is not None  # `name:` gives resumable checkpoint folders
    import importlib

    module, _, cls = cfg.data.class_path.rpartition(".")
    data_cls = getattr(importlib.import_module(module), cls)
    init = cfg.data.init_args.as_dict() if isinstance(cfg.data.init_args, Namespace) else dict(cfg.data.init_args)
    data = data_cls(**init)
    assert data.num_classes >= 2


@pytest.mark.parametrize("path", SUB, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_sub_config_is_included(path):
    users = []
    for run in RUN:
        raw = yaml.safe_load(run.read_text())
        for value in raw.values():
            if isinstance(value, str) and value.endswith(".yaml") and (run.parent / value).resolve() == path.resolve():
                users.append(run)
    assert users, f"{path} is not a run config (no model) and no run config includes it"
