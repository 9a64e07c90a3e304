"""docs/adding_a_dataset.md, done literally: the class-folder config on a temporary tree; the module
written to a temp dir, its config parsed.
"""

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


def doc_yaml(containing: str) -> dict:
    return yaml.safe_load(next(b for b in doc_blocks("yaml") if containing in b))


def doc_config(root):
    cfg = doc_yaml("mypackage")
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


def test_doc_folder_config_reads_class_folders(tmp_path):
    """Option 1 of the page: no code, the folder tree of its picture (split first)."""
    from jsonargparse import ArgumentParser

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for c in ("mug", "bottle"):
            (tmp_path / split / c).mkdir(parents=True)
            for k in range(n):
                np.savez(tmp_path / split / c / f"{k}.npz", points=rng.normal(size=(200, 3)).astype(np.float32))
    cfg = doc_yaml("PointCloudFolder")
    cfg["data"]["init_args"].update(root=str(tmp_path), few_shot=2, batch_size=4)
    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    data = parser.instantiate(parser.parse_object(cfg)).data
    assert type(data).__name__ == "PointCloudFolder" and data.class_names == ["bottle", "mug"]
    assert len(data.items("train")) == 4 and len(data.items("val")) == 4  # val -> test
    assert next(iter(data.train_dataloader()))["label"].shape == (4,)
