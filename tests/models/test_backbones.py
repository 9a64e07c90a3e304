"""SparseResNet: every registered variant builds, matches timm's 2D state dict, counts, runs."""
import pytest
import timm
import torch

from i2p.inflate import InflateConfig
from i2p.sparse import SparseTensor
from models.backbones import ARCHS, SparseResNet, create_sparse_resnet
from models.weights import plan_transfer

SMALL = {"resnet18", "resnet26", "resnet34", "resnext50_32x4d", "resnet50"}


def tiny_batch(in_channels=3, n=40, box=8, batches=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randint(0, box, (n * batches, 3), generator=g)
    b = torch.arange(batches).repeat_interleave(n)[:, None]
    coords = torch.unique(torch.cat([b, pts], 1), dim=0).int()
    return SparseTensor(torch.randn(len(coords), in_channels, generator=g), coords)


def expected_params(sd2d, in_channels, num_classes, num_features, shortcut="repeat"):
    """3D parameter count derived independently from the 2D tensors (stem new, paper head)."""
    total = 0
    for k, v in sd2d.items():
        if k.startswith(("conv1.", "bn1.", "fc.")) or not k.endswith(("weight", "bias")):
            continue
        if v.dim() == 4:
            kh = v.shape[2]
            depth = kh if kh > 1 else (8 if "downsample" in k and shortcut == "repeat" else 1)
            total += v.numel() * depth
        else:
            total += v.numel()
    stem = in_channels * 64 * 27 + 2 * 64
    head = num_features * num_classes + num_classes + 2 * num_classes
    return total + stem + head


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHS))
def test_variant_matches_timm(name):
    with torch.device("meta"):
        sd2d = timm.create_model(name, pretrained=False).state_dict()
        for shortcut in ("repeat", "point"):
            m3 = SparseResNet(num_classes=40, stem="inflate", shortcut=shortcut, **ARCHS[name])
            # every 2D tensor inflates to the same-named 3D tensor's shape, nothing left over
            plan, dropped = plan_transfer(m3, sd2d, InflateConfig("copy", "y", shortcut), False, name)
            assert dropped == ["fc.weight", "fc.bias"]
            assert len(plan) == len(sd2d) - 2
            m_new = SparseResNet(num_classes=40, stem="new", shortcut=shortcut, **ARCHS[name])
            n = sum(p.numel() for p in m_new.parameters())
            assert n == expected_params(sd2d, 3, 40, m_new.num_features, shortcut)
    if name in SMALL:
        model = create_sparse_resnet(name, num_classes=40).eval()
        x = tiny_batch()
        with torch.no_grad():
            feats = model.forward_intermediates(x)
            logits = model(x)
        assert logits.shape == (2, 40)
        assert [f.stride[0] for f in feats] == [1, 1, 2, 4, 8]
        assert feats[-1].feats.shape[1] == model.num_features


def test_reference_parameter_count():
    with torch.device("meta"):
        m = create_sparse_resnet("resnet18", num_classes=40)
    assert sum(p.numel() for p in m.parameters()) == 34_368_056


def test_interface_and_heads():
    m = SparseResNet("basic", (1, 1, 1, 1), num_classes=7, in_channels=4, channels=(8, 16, 16, 32),
                     stem="inflate").eval()
    x = tiny_batch(in_channels=4, box=12)
    with torch.no_grad():
        inter = m.forward_intermediates(x)
        pooled = m.forward_head(m.forward_features(x), pre_logits=True)
        logits = m(x)
    assert [f.stride[0] for f in inter] == [2, 4, 8, 16, 32]  # stem output taken before the max-pool
    assert pooled.shape == (2, m.num_features) == (2, 32) and logits.shape == (2, 7)
    assert m.num_classes == 7 and m.default_cfg["first_conv"] == "conv1"
    assert m.get_submodule(m.pretrained_cfg["classifier"]) is m.get_classifier()
    assert m.get_classifier().weight.shape == (7, 32)
    assert isinstance(m.head.norm, torch.nn.BatchNorm1d)
    with pytest.raises(ValueError, match="in_channels=4"):
        m(tiny_batch(in_channels=3))
    mlp = SparseResNet("basic", (1, 1, 1, 1), num_classes=5, channels=(8, 8, 8, 8), head="mlp", head_hidden=6).eval()
    assert mlp(tiny_batch()).shape == (2, 5) and mlp.get_classifier().weight.shape == (5, 6)
    feat = SparseResNet("basic", (1, 1, 1, 1), num_classes=0, channels=(8, 8, 8, 16)).eval()
    assert feat(tiny_batch()).shape == (2, 16)
    with pytest.raises(ValueError, match="stem"):
        SparseResNet("basic", (1, 1, 1, 1), stem="deep")
    with pytest.raises(ValueError, match="unknown model 'resnet99'"):
        create_sparse_resnet("resnet99")


def test_names_match_timm():
    """Same module names as timm (minus the 2D classifier): transfer is by name."""
    keys3d = set(create_sparse_resnet("resnet18", stem="inflate", num_classes=3).state_dict())
    keys2d = set(timm.create_model("resnet18").state_dict())
    as3d = {k[:-len("weight")] + "kernel" if ("conv" in k or "downsample.0" in k) and k.endswith("weight") else k
            for k in keys2d if not k.startswith("fc.")}
    assert as3d == {k for k in keys3d if not k.startswith("head.")}


def test_train_step_runs():
    m = SparseResNet("bottleneck", (1, 1, 1, 1), num_classes=3, channels=(4, 8, 8, 8), cardinality=2, base_width=64)
    m.train()
    loss = m(tiny_batch()).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
