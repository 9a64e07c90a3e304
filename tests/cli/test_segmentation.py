"""Segmentation through the app: the demo's flow on tiny rooms, `i2p predict` on a point-cloud
file, the shipped segmentation configs, and DDP: 1 and 2 gloo processes give the same point-level
metrics on one checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i2p.io import write_point_cloud
from tests.cli.test_ddp import _csv_logger, _i2p, _metrics
from tests.helpers.segmentation import write_seg_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


def test_segmentation_recipes_ship():
    for dataset in ("s3dis", "semantic_kitti", "shapenet_part"):
        for regime in ("io", "iobn", "all", "scratch"):
            assert (CONFIGS / dataset / f"{regime}_resnet18.yaml").is_file()
    assert (CONFIGS / "demo_seg.yaml").is_file()


@pytest.mark.slow
def test_demo_flow_then_predict_every_point_of_a_file(tmp_path, capsys, monkeypatch):
    from i2p.cli import demo_seg
    from i2p.cli.main import main
    from tests.helpers.classifier import tiny_pretrained_2d

    monkeypatch.chdir(tmp_path)
    cfg = write_seg_config(tmp_path, data={"num_train": 4, "num_val": 2, "num_test": 2})
    assert demo_seg.run(["--config", str(cfg), "--pretrained", str(tiny_pretrained_2d())]) == 0
    printed = capsys.readouterr().out
    assert "test mIoU" in printed and "majority-class baseline 'wall'" in printed
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    prep = stored["datamodule_hyper_parameters"]  # the preprocessing predict reuses: Lightning's own entry
    assert {k: prep[k] for k in ("voxel_size", "features", "normalize", "ignore_index")} == {
        "voxel_size": 0.5, "features": "voxel_xyz+rgb_centred", "normalize": False, "ignore_index": -100}

    rng = np.random.default_rng(0)
    pts = (rng.random((300, 3)) * [3, 3, 2.5]).astype(np.float32)
    write_point_cloud(tmp_path / "scan.ply", pts, colors=rng.random((300, 3)))
    np.savetxt(tmp_path / "scan2.txt", np.hstack([pts[:50], rng.integers(0, 256, (50, 3))]), fmt="%.4f")
    assert main(["predict", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "pred"), "--inputs",
                 str(tmp_path / "scan.ply"), str(tmp_path / "scan2.txt")]) == 0  # dispatched on the class
    labels = np.loadtxt(tmp_path / "pred" / "scan.labels.txt", dtype=int)
    assert labels.shape == (300,) and labels.min() >= 0 and labels.max() < 8
    assert len(np.loadtxt(tmp_path / "pred" / "scan2.labels.txt", dtype=int)) == 50
    from i2p.io import read_point_cloud

    coloured = read_point_cloud(tmp_path / "pred" / "scan.ply")
    np.testing.assert_allclose(coloured["points"], pts, atol=1e-5)
    assert coloured["colors"].shape == (300, 3)
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(["predict", "--ckpt_path", str(tmp_path / "nope.ckpt"), "--inputs", str(tmp_path / "scan.ply")])


@pytest.mark.ddp
def test_one_and_two_processes_give_the_same_miou(tmp_path):
    # 5 validation rooms, batch 2: rank 0 gets 3 (2 batches), rank 1 gets 2 (1 batch)
    from i2p.cli.lightning import run_lightning

    cfg = write_seg_config(tmp_path, data={"num_train": 4, "num_val": 5})
    run_lightning(["fit", "--config", str(cfg)])  # in this process: one subprocess start (~20 s) less
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    run_lightning(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt), *_csv_logger(tmp_path / "one")])
    _i2p(["validate", "--config", str(cfg), "--ckpt_path", str(ckpt), *ddp, *_csv_logger(tmp_path / "two")], tmp_path)
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert {"val/miou", "val/oacc", "val/macc", "val/loss", "val/iou_wall"} <= one.keys()
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
