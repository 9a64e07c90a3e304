"""Loading 2D weights: local files (timm/torchvision, wrapped, safetensors), modules, the timm
pretrained path, strict errors, and the `i2p inflate` checkpoint round trip.
"""
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.resnet import BasicBlock, ResNet

from i2p.inflate import InflateConfig
from models import weights
from models.backbones import SparseResNet, create_sparse_resnet
from models.backbones.planar import randomize_bn_stats_
from models.weights import WeightsUnavailable, hub_weights_file, load_pretrained
from tests.helpers.hub import unreachable_hub
from tests.helpers.weights import assert_transferred

SMALL = dict(block="basic", layers=(1, 1, 1, 1), channels=(16, 16, 32, 32))


def small_2d(seed=0):
    torch.manual_seed(seed)
    return randomize_bn_stats_(ResNet(BasicBlock, (1, 1, 1, 1), channels=(16, 16, 32, 32), num_classes=10), seed)


def small_3d(**kw):
    return SparseResNet(num_classes=5, **SMALL, **kw)


def test_local_timm_checkpoint_file(tmp_path):
    m2 = small_2d()
    sd2d = m2.state_dict()
    path = tmp_path / "r.pth"
    torch.save(sd2d, path)
    m3 = small_3d()
    report = load_pretrained(m3, str(path), InflateConfig("copy", "z-axis"))
    assert_transferred(m3, sd2d, "copy", "y")  # official z-axis == our depth y
    assert set(report.dropped) == {"conv1.weight", "fc.weight", "fc.bias"} | {
        k for k in sd2d if k.startswith("bn1.")}
    assert set(report.used) == set(sd2d) - set(report.dropped)
    assert {k.split(".")[0] for k in report.fresh} == {"conv1", "bn1", "head"}
    assert "conv1" in str(report) and "head" in str(report)
    assert all(k in report.details() for k in list(sd2d) + report.fresh)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "ddp", "safetensors", "module", "mapping"])
def test_wrapped_checkpoints(tmp_path, wrap):
    m2 = small_2d(1)
    sd2d = m2.state_dict()
    path = tmp_path / "w.pth"
    if wrap == "state_dict":
        torch.save({"state_dict": sd2d, "epoch": 3, "arch": "resnet"}, path)
    elif wrap == "model":
        torch.save({"model": sd2d, "optimizer": {"lr": 0.1}}, path)
    elif wrap == "ddp":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd2d.items()}}, path)
    elif wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd2d.items()}, str(path))
    source = {"module": m2, "mapping": sd2d}.get(wrap, str(path))
    m3 = small_3d(stem="inflate")
    report = load_pretrained(m3, source)
    assert_transferred(m3, sd2d)
    assert "conv1.weight" in report.used and sorted(report.dropped) == ["fc.bias", "fc.weight"]


class Evil:
    """Any non-tensor class: `weights_only=True` must refuse to unpickle it."""


def test_weights_only_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_2d().state_dict(), "extra": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_pretrained(small_3d(), str(path))


def test_timm_pretrained_path(tmp_path, monkeypatch):
    """pretrained=True goes through timm's own pretrained loading (here redirected to a local file)."""
    torch.manual_seed(0)
    m2 = randomize_bn_stats_(timm.create_model("resnet18"))
    path = tmp_path / "resnet18_local.pth"
    torch.save(m2.state_dict(), path)
    m3 = create_sparse_resnet("resnet18", pretrained=True, num_classes=4,
                              pretrained_cfg_overlay=dict(file=str(path)))
    assert_transferred(m3, m2.state_dict())
    assert m3.pretrained_cfg["transfer"].source == "timm:resnet18"
    assert m3.pretrained_cfg["hf_hub_id"].startswith("timm/resnet18")

    calls = []

    def fake_create_model(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return small_2d()
    monkeypatch.setattr(timm, "create_model", fake_create_model)
    monkeypatch.setattr(weights, "hub_weights_file", lambda name: None)  # as if downloadable
    load_pretrained(small_3d(), "timm:resnet18.a1_in1k")
    assert calls == [("resnet18.a1_in1k", True)]


def test_mismatched_checkpoint_names_key_and_shapes(tmp_path):
    sd2d = small_2d().state_dict()
    sd2d["layer2.0.conv1.weight"] = torch.randn(16, 8, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(sd2d, path)
    m3 = small_3d()
    before = m3.layer1[0].conv1.kernel.clone()
    with pytest.raises(ValueError) as err:
        load_pretrained(m3, str(path))
    msg = str(err.value)
    assert "layer2.0.conv1.weight" in msg and "(16, 8, 3, 3)" in msg and "(27, 16, 16)" in msg
    assert torch.equal(m3.layer1[0].conv1.kernel, before)  # all or nothing


def test_unknown_and_missing_keys():
    sd2d = small_2d().state_dict()
    extra = dict(sd2d, **{"layer1.1.conv1.weight": torch.randn(16, 16, 3, 3)})
    with pytest.raises(ValueError, match=r"unknown keys.*layer1\.1\.conv1\.weight"):
        load_pretrained(small_3d(), extra)
    missing = {k: v for k, v in sd2d.items() if k != "layer4.0.bn1.running_var"}
    with pytest.raises(ValueError, match=r"missing.*layer4\.0\.bn1\.running_var"):
        load_pretrained(small_3d(), missing)
    with pytest.raises(ValueError, match=r"conv1\.weight.*\(16, 3, 7, 7\).*\(343, 4, 64\)|conv1\.weight"):
        load_pretrained(SparseResNet(num_classes=5, in_channels=4, stem="inflate", **SMALL), sd2d)
    with pytest.raises(TypeError, match="pretrained must be"):
        load_pretrained(small_3d(), 3.5)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(small_3d(), "nope.pth")


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    return unreachable_hub(monkeypatch, tmp_path)


def test_no_hub_fails_at_once_with_what_to_do(no_hub, monkeypatch):
    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: calls.append(a))  # the retrying download
    with pytest.raises(WeightsUnavailable, match="127.0.0.1:9 unreachable") as e:
        create_sparse_resnet("resnet18.tv_in1k", pretrained=True, num_classes=4)
    assert not calls  # failed before timm asked the hub
    for hint in ("HF_HUB_OFFLINE=1", "pretrained: /path/to/weights.pth", "pretrained: false", "timm/resnet18.tv_in1k"):
        assert hint in str(e.value)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE is set"):
        hub_weights_file("resnet18.tv_in1k")


def test_prefetched_cache_loads_without_the_network(no_hub):
    """A node without internet, with the Hugging Face cache copied from one that has it."""
    from safetensors.torch import save_file

    m2 = randomize_bn_stats_(timm.create_model("resnet18"))
    snap = no_hub / "hf" / "models--timm--resnet18.tv_in1k" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in m2.state_dict().items()}, str(snap / "model.safetensors"))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")
    assert hub_weights_file("resnet18.tv_in1k") == str(snap / "model.safetensors")
    m3 = create_sparse_resnet("resnet18.tv_in1k", pretrained=True, num_classes=4)
    assert_transferred(m3, m2.state_dict())
