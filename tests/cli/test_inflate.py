"""``i2p inflate``: writes a 3D checkpoint that loads back exactly, and ``--verify`` passes."""

import pytest
import timm
import torch

from i2p.cli.inflate import main as inflate_main
from i2p.inflate import InflateConfig
from models.backbones import create_sparse_resnet
from models.backbones.planar import randomize_bn_stats_
from tests.helpers.weights import assert_transferred


@pytest.mark.slow
def test_inflate_command_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    m2 = randomize_bn_stats_(timm.create_model("resnet18", num_classes=10))
    src = tmp_path / "r18.pth"
    torch.save(m2.state_dict(), src)
    for suffix in (".pth", ".safetensors"):
        out = tmp_path / f"r18_3d{suffix}"
        assert inflate_main(["--model", "resnet18", "--weights", str(src), "--out", str(out),
                             "--depth-axis", "x", "--kernel-mode", "center"]) == 0
        m3 = create_sparse_resnet("resnet18", pretrained=str(out), inflate=InflateConfig("center", "x"),
                                  num_classes=3)
        assert m3.pretrained_cfg["transfer"].already_3d
        assert_transferred(m3, m2.state_dict(), "center", "x")
        with pytest.raises(ValueError, match="was inflated with"):
            create_sparse_resnet("resnet18", pretrained=str(out), num_classes=3)  # default axis y
    assert "wrote" in capsys.readouterr().out
    assert inflate_main(["--model", "resnet18", "--verify", "--weights", str(src), "--height", "12",
                         "--width", "10", "--kernel-mode", "center"]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and all(s in text for s in ("stem", "layer1", "layer4"))
