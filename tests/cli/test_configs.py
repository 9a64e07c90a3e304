"""Every YAML under configs/ loads through the i2p CLI parser (a config that does not load fails).

Run configs (``configs/experiments/``) are parsed as ``i2p fit --config``; the pieces in
``data/``, ``model/`` and ``trainer/`` are parsed as their own group (``--data FILE`` ...) on top
of a run config, and ``defaults.yaml`` is what every parse starts from. Nothing heavy is built:
classes are imported and init_args type-checked; the DataModule is instantiated (cheap, no files
read) to check that ``num_classes`` links.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonargparse import Namespace

from i2p.cli.lightning import parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))
RUN = sorted((CONFIGS / "experiments").rglob("*.yaml"))
PIECES = [p for p in ALL if p.parent.name in ("data", "model", "trainer")]


def test_configs_are_grouped_by_kind():
    assert {p.relative_to(CONFIGS).parts[0] for p in ALL} == {"data", "model", "trainer", "experiments",
                                                              "defaults.yaml"}
    assert all("model" in yaml.safe_load(p.read_text()) for p in RUN)  # a run config names its model


def test_there_are_configs():
    names = {str(p.relative_to(CONFIGS / "experiments")) for p in RUN}
    assert "demo.yaml" in names
    for regime in ("io", "iobn", "all", "scratch"):
        for net in ("resnet18", "resnet50"):
            assert f"modelnet40/{regime}_{net}.yaml" in names
            assert f"scanobjectnn/{regime}_{net}.yaml" in names


def class_folders(root: Path) -> str:
    """A two-class PointCloudFolder tree, for configs whose DataModule reads its class names from disk."""
    import numpy as np

    for split in ("train", "test"):
        for name in ("bowl", "cup"):
            (root / split / name).mkdir(parents=True)
            np.savez(root / split / name / "a.npz", points=np.zeros((4, 3), np.float32))
    return str(root)


@pytest.mark.parametrize("path", RUN, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_run_config_parses(path, tmp_path):
    cfg = parse_config(["fit", "--config", str(path)]).fit
    assert cfg.model.class_path in ("models.PointClassifier", "models.PointSegmenter")
    assert cfg.data.class_path.startswith("datamodules.")
    assert cfg.trainer.logger is not None  # the W&B default survives includes
    assert cfg.checkpoint.dirpath is not None  # `name:` gives resumable checkpoint folders
    import importlib

    module, _, cls = cfg.data.class_path.rpartition(".")
    data_cls = getattr(importlib.import_module(module), cls)
    init = cfg.data.init_args.as_dict() if isinstance(cfg.data.init_args, Namespace) else dict(cfg.data.init_args)
    if cfg.data.class_path == "datamodules.PointCloudFolder":  # class names come from the folders
        init["root"] = class_folders(tmp_path / "my_shapes")
    data = data_cls(**init)
    assert data.num_classes >= 2


@pytest.mark.parametrize("path", PIECES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_piece_parses_as_its_group(path):
    group = path.parent.name
    cfg = parse_config(["fit", "--config", str(CONFIGS / "experiments" / "demo.yaml"), f"--{group}", str(path)]).fit
    piece = yaml.safe_load(path.read_text())
    if group == "trainer":
        assert cfg.trainer.max_epochs == piece["max_epochs"]
    else:
        assert cfg[group].class_path == piece["class_path"]
        assert all(cfg[group].init_args[k] is not None for k in piece["init_args"])


def test_defaults_are_yaml_and_reach_every_subcommand():
    defaults = yaml.safe_load((CONFIGS / "defaults.yaml").read_text())
    for sub in ("fit", "validate", "test"):
        cfg = parse_config([sub, "--config", str(CONFIGS / "experiments" / "demo.yaml")])[sub]
        assert cfg.checkpoint.monitor == defaults["checkpoint"]["monitor"] and cfg.checkpoint.save_last
        assert cfg.trainer.logger.class_path == defaults["trainer"]["logger"]["class_path"]
        assert cfg.seed_everything == defaults["seed_everything"]


def _glob_match(parts: tuple[str, ...], pattern: str) -> bool:
    """Match like setuptools' package-data glob: ``*`` stays within one path segment."""
    import fnmatch

    pats = pattern.split("/")
    return len(pats) == len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats))


def test_every_config_ships_in_the_wheel():
    """The package data of pyproject.toml covers every YAML, so a wheel install finds the same configs."""
    import fnmatch
    import tomllib

    project = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(fnmatch.fnmatch("configs", pattern) for pattern in project["packages"]["find"]["include"])
    data = project["package-data"]
    missed = []
    for path in ALL:
        rel = path.relative_to(CONFIGS.parent)
        ok = any(rel.parts[: len(pkg.split("."))] == tuple(pkg.split("."))
                 and _glob_match(rel.parts[len(pkg.split(".")):], pat) for pkg, pats in data.items() for pat in pats)
        if not ok:
            missed.append(str(rel))
    assert not missed, f"configs not in pyproject's package-data (a wheel would lack them): {missed}"
