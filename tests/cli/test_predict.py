"""``i2p predict``: a checkpoint on written files of every format, one CSV row per file, using the
preprocessing stored in the checkpoint; other LightningModules go to the segmentation predictor.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from i2p import io
from i2p.cli import main
from i2p.cli.lightning import run_lightning
from tests.helpers.classifier import CLASSES, tiny_data, write_config

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
CUBE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
CLOUDS = (".ply", ".pcd", ".xyz", ".npz", ".txt", ".npy")
MESHES = (".off", ".obj", ".stl")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of `i2p fit` on the tiny data (voxel 0.25, 256 points: not the defaults)."""
    tmp = tmp_path_factory.mktemp("fit")
    cfg = write_config(tmp, pretrained=False, regime="all", limit_train_batches=2, limit_val_batches=1)
    run_lightning(["fit", "--config", str(cfg)])
    return tmp / "ckpt" / "last.ckpt"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expected_probabilities(ckpt, points):
    """What the model gives these points through the DataModule's own evaluation pipeline."""
    from datamodules import collate_voxels
    from models import PointClassifier

    model = PointClassifier.load_from_checkpoint(ckpt).eval()
    dm = tiny_data()
    ds = dm.dataset("test", train=False)
    ds.items, ds.read, ds.describe = [0], lambda _: {"points": points, "label": 0}, str
    with torch.no_grad():
        return torch.softmax(model(collate_voxels([ds[0]])["x"]), 1)[0]


@pytest.mark.slow
def test_predict_every_format_one_row_each(checkpoint, tmp_path):
    points = tiny_data().arrays("test")["points"][0]  # a real test shape, [256, 3]
    for ext in CLOUDS:
        io.write_point_cloud(tmp_path / "in" / f"shape{ext}", points)
    for ext in MESHES:
        io.write_mesh(tmp_path / "in" / "meshes" / f"cube{ext}", CUBE_V, CUBE_F)
    (tmp_path / "in" / "README.md").write_text("not a cloud")  # folders yield readable files only
    out = tmp_path / "preds.csv"
    assert main(["predict", "--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "in"), "--out", str(out)]) == 0

    rows = read_rows(out)
    assert len(rows) == len(CLOUDS) + len(MESHES)
    assert {r["path"].rsplit(".", 1)[1] for r in rows} == {e[1:] for e in CLOUDS + MESHES}
    want = expected_probabilities(checkpoint, points)
    for r in rows:
        top = [(name, float(p)) for name, p in (pair.split(":") for pair in r["top5"].split())]
        assert len(top) == len(CLASSES) and {n for n, _ in top} == set(CLASSES)  # top-5 of 4 classes
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
        assert r["class"] == top[0][0] and float(r["probability"]) == pytest.approx(top[0][1], abs=1e-4)
        if "meshes" not in r["path"]:  # the same points in every format: the pipeline of the checkpoint
            got = torch.tensor([dict(top)[c] for c in CLASSES])
            torch.testing.assert_close(got, want.float(), atol=2e-4, rtol=0)


@pytest.mark.slow
def test_predict_globs_stdout_and_bad_files(checkpoint, tmp_path, capsys):
    for k in range(3):
        io.write_point_cloud(tmp_path / f"s{k}.npz", np.random.default_rng(k).normal(size=(100, 3)))
    assert main(["predict", "--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "s[01].npz"),
                 str(tmp_path / "s0.npz"), "--out", "-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,class,probability,top5" and len(lines) == 3  # s0 once, s1; not s2
    (tmp_path / "bad.xyz").write_text("1 2\n3 4\n")
    out = tmp_path / "never.csv"
    with pytest.raises(SystemExit, match=r"bad.xyz.*\[P, 3\+\]"):
        main(["predict", "--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "bad.xyz"), "--out", str(out)])
    assert not out.exists()
    with pytest.raises(SystemExit, match="no such file or folder"):
        main(["predict", "--ckpt_path", str(checkpoint), "--inputs", str(tmp_path / "nothing*.ply")])
