"""docs/adding_a_dataset.md, done literally: its module written to a temp dir, its config parsed."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding_a_dataset.md"


def doc_blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    pkg = tmp_path / "mypackage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mydata.py").write_text(doc_blocks("python")[0])  # the page's module, verbatim
    rng = np.random.default_rng(0)
    root = tmp_path / "myshapes"
    for split, n in (("train", 4), ("test", 2)):
        for ci, c in enumerate(["mug", "bottle", "bowl"]):
            for k in range(n):
                d = root / split / c
                d.mkdir(parents=True, exist_ok=True)
                pts = rng.normal(size=(300, 3)).astype(np.float32) * (1 + ci)
                np.savez(d / f"{c}_{k}.npz", points=pts)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m.startswith("mypackage")]:
        del sys.modules[name]


def doc_config(root):
    cfg = yaml.safe_load(doc_blocks("yaml")[0])
    cfg["data"]["init_args"].update(root=str(root), batch_size=4, few_shot=2)
    return cfg


def test_doc_module_and_config_build_a_batch(user_package):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningDataModule, "data")  # what LightningCLI does for `data:`
    cfg = parser.parse_object({"data": doc_config(user_package)["data"]})
    data = parser.instantiate(cfg).data
    assert type(data).__name__ == "MyShapes" and data.num_classes == 3
    assert len(data.items("train")) == 6  # few_shot=2 of 4 per class
    batch = next(iter(data.train_dataloader()))
    assert batch["label"].shape == (4,) and batch["points"].shape == (4 * 300, 3)
    assert set(batch) == {"x", "label", "index", "inverse", "point_offsets", "points"}
    assert len(data.items("val")) == 6  # val -> test in the doc's example


def test_doc_module_errors_name_the_file(user_package):
    from mypackage.mydata import MyShapes

    bad = user_package / "test" / "mug" / "mug_0.npz"
    np.savez(bad, points=np.full((10, 3), np.nan, np.float32))
    ds = MyShapes(root=str(user_package)).dataset("test")
    with pytest.raises(ValueError, match=r"mug_0.npz.*NaN/Inf"):
        [ds[i] for i in range(len(ds))]


@pytest.mark.slow
def test_cli_parses_the_doc_config(user_package, tmp_path, monkeypatch):
    from i2p.cli import lightning as cli
    monkeypatch.setattr(sys, "argv", ["i2p"])
    cfg = doc_config(user_package)
    cfg["trainer"] = {"logger": False, "accelerator": "cpu", "max_epochs": 1, "enable_progress_bar": False}
    path = tmp_path / "myshapes.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = cli.run_lightning(["--config", str(path), f"--checkpoint.dirpath={tmp_path / 'ckpt'}"], run=False)
    assert type(run.datamodule).__name__ == "MyShapes"
    assert run.model.num_classes == 3  # linked from data.num_classes
