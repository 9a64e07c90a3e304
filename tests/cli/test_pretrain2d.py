"""``i2p pretrain2d``: generated images, a loadable timm-format checkpoint, and the settings cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from i2p.cli import main, pretrain2d
from i2p.cli.shapes2d import CLASS_NAMES, render_shapes
from tests.helpers.classifier import PRETRAIN_ARGS, tiny_pretrained_2d


def test_render_shapes_is_seeded_and_covers_classes():
    a, la = render_shapes(64, 32, seed=3)
    b, lb = render_shapes(64, 32, seed=3)
    c, _ = render_shapes(64, 32, seed=4)
    assert a.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert len(CLASS_NAMES) >= 10 and set(render_shapes(400, 32, 0)[1]) == set(range(len(CLASS_NAMES)))
    assert a.std() > 20  # colour and texture, not blank images


@pytest.mark.slow
def test_checkpoint_is_timm_format_and_inflates():
    path = tiny_pretrained_2d()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert "fc.weight" in state and "conv1.weight" in state and "layer4.1.bn2.running_var" in state
    net = timm.create_model("resnet18", pretrained=False, num_classes=len(CLASS_NAMES))
    net.load_state_dict(state, strict=True)
    record = json.loads(pretrain2d.sidecar_path(path).read_text())
    assert record["settings"]["model"] == "resnet18" and record["classes"] == list(CLASS_NAMES)

    from models.backbones import create_sparse_resnet

    sparse = create_sparse_resnet("resnet18", pretrained=str(path), num_classes=5)
    inflated = sparse.layer1[0].conv1.kernel  # [27, 64, 64], copy mode: every depth slice = the 2D kernel
    assert inflated.shape[0] == 27
    assert torch.equal(sparse.layer1[0].bn1.running_mean, state["layer1.0.bn1.running_mean"])


def test_cache_skips_retraining_and_settings_change_retrains(tmp_path, capsys):
    path = tiny_pretrained_2d()
    mtime = path.stat().st_mtime_ns
    assert main(["pretrain2d", *PRETRAIN_ARGS, "--output", str(path)]) == 0  # through the console script
    assert path.stat().st_mtime_ns == mtime and "cached" in capsys.readouterr().out

    args = pretrain2d.build_parser().parse_args([*PRETRAIN_ARGS, "--output", str(path)])
    assert pretrain2d.cached_record(path, pretrain2d.settings_of(args)) is not None
    args.seed = 1
    assert pretrain2d.cached_record(path, pretrain2d.settings_of(args)) is None


def test_plain_pretrain2d_is_the_demos_run():
    """Its defaults are the demos' 2D run, so plain `i2p pretrain2d` fills the cache both demos read."""
    parser = pretrain2d.build_parser()
    plain, demo = parser.parse_args([]), parser.parse_args(pretrain2d.DEMO_ARGS)
    assert pretrain2d.settings_of(plain) == pretrain2d.settings_of(demo)
    assert pretrain2d.default_output(plain) == pretrain2d.default_output(demo)
    assert pretrain2d.demo_weights("mine.pth", "[demo]") == "mine.pth"  # a given checkpoint is used as it is
