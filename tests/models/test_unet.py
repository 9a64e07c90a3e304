"""SparseResUNet: the official parameter counts, one output row per point, the stride round trip, the
strict transfer of 2D weights into its encoder by timm's names.
"""

from __future__ import annotations

import pytest
import timm
import torch

from i2p.inflate import InflateConfig
from i2p.sparse import SparseTensor, devoxelize, sparse_collate, sparse_quantize
from models.backbones import SparseResUNet, create_sparse_resunet
from tests.helpers.weights import assert_transferred


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _scene(seed: int = 0, n: int = 600, samples: int = 2, voxel: float = 0.25):
    """Points on the faces of a 3 x 2 x 2 box per sample, voxelised and collated."""
    g = torch.Generator().manual_seed(seed)
    clouds, items = [], []
    for _ in range(samples):
        u = torch.rand(n, 3, generator=g) * torch.tensor([3.0, 2.0, 2.0])
        face = torch.randint(0, 3, (n,), generator=g)
        u[torch.arange(n), face] = torch.tensor([3.0, 2.0, 2.0])[face] * torch.randint(0, 2, (n,), generator=g)
        coords, rep, inverse = sparse_quantize(u, voxel)
        clouds.append((u, inverse))
        items.append((coords, torch.randn(len(coords), 6, generator=g)))
    x, offsets = sparse_collate(items)
    points = torch.cat([c[0] for c in clouds])
    inverse = torch.cat([c[1] + offsets[b] for b, c in enumerate(clouds)])
    batch = torch.cat([torch.full((len(c[0]),), b) for b, c in enumerate(clouds)])
    return x, points, inverse, batch, voxel


def test_official_preset_matches_the_official_counts():
    with torch.device("meta"):  # 100M parameters without allocating them
        s3dis = SparseResUNet("resnet18", in_channels=6, num_classes=14, preset="official")
        kitti = SparseResUNet("resnet18", in_channels=4, num_classes=19, preset="official")
    encoder = sum(_count(getattr(s3dis, n)) for n in s3dis.stage_modules())
    assert encoder == 34_342_144
    assert _count(s3dis) == 99_909_518
    assert _count(kitti) == 99_907_027
    assert s3dis.decoder_channels == (512, 256, 192, 192) and s3dis.devoxelize_mode == "trilinear"
    # the transferred part is exactly what is not fresh
    fresh = s3dis.fresh_prefixes()
    copied = sum(p.numel() for n, p in s3dis.named_parameters() if not (n + ".").startswith(fresh))
    assert copied == encoder


@pytest.mark.slow
def test_one_row_per_point_and_nearest_is_the_inverse_map():
    x, points, inverse, batch, voxel = _scene()
    net = SparseResUNet("resnet18", 6, 5, preset="light", devoxelize="nearest").eval()
    with torch.no_grad():
        per_point = net(x, inverse=inverse)
        per_voxel = net(x)
        feats = net.forward_features(x)
        engine = devoxelize(feats, points, batch, voxel, mode="nearest")
    assert per_point.shape == (len(points), 5) and per_voxel.shape == (len(x), 5)
    torch.testing.assert_close(per_point, per_voxel[inverse])
    torch.testing.assert_close(net.point_features(feats, inverse=inverse), engine)

    tri = SparseResUNet("resnet18", 6, 5, preset="light").eval()
    tri.load_state_dict(net.state_dict())
    with torch.no_grad():
        out = tri(x, points, batch, voxel)
    assert out.shape == (len(points), 5) and torch.isfinite(out).all()
    assert not torch.allclose(out, per_point)  # trilinear mixes the neighbouring voxels
    with pytest.raises(ValueError, match="needs the points"):
        tri.point_features(feats, inverse=inverse)


def test_stride_round_trip_returns_to_the_input_coordinates():
    x, *_ = _scene(seed=1)
    net = SparseResUNet("resnet18", 6, 3, preset="light", decoder_channels=(16, 16, 8, 8)).eval()
    levels = net.forward_intermediates(x)
    assert [lv.stride for lv in levels] == [(s, s, s) for s in (1, 2, 4, 8, 16)]
    h = levels[-1]
    for name, skip in zip(net.decoder_modules(), levels[-2::-1]):
        h = getattr(net, name)(h, skip)
        assert h.stride == skip.stride and torch.equal(h.coords, skip.coords)
    assert torch.equal(h.coords, x.coords) and h.feats.shape == (len(x), 8)
    assert torch.equal(net.forward_features(x).coords, x.coords)


def test_category_one_hot_reaches_the_head():
    x, points, inverse, batch, voxel = _scene(seed=2)
    net = SparseResUNet("resnet18", 6, 7, preset="light", devoxelize="nearest", num_categories=3).eval()
    assert net.head.fc.weight.shape == (7, 64 + 3)
    with torch.no_grad():
        a = net(x, inverse=inverse, category=torch.zeros(len(points), dtype=torch.long))
        b = net(x, inverse=inverse, category=torch.full((len(points),), 2))
    assert a.shape == (len(points), 7) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="category"):
        net(x, inverse=inverse)


@pytest.mark.slow
def test_2d_weights_transfer_into_the_encoder_by_name():
    m2d = timm.create_model("resnet18", pretrained=False)
    sd2d = m2d.state_dict()
    net = create_sparse_resunet("resnet18", pretrained=sd2d, in_channels=6, num_classes=4, preset="light",
                                inflate=InflateConfig())
    assert_transferred(net, sd2d)
    report = net.pretrained_cfg["transfer"]
    assert {k.split(".")[0] for k in report.dropped} == {"conv1", "bn1", "fc"}
    assert {k.split(".")[0] for k in report.fresh} == {"stem", "down", "up1", "up2", "up3", "up4", "head"}
    assert {k.split(".")[0] for k in report.used} == {"layer1", "layer2", "layer3", "layer4"}
    with pytest.raises(ValueError, match="shape mismatch"):  # a ResNet-34 checkpoint into a ResNet-18 encoder
        create_sparse_resunet("resnet18", pretrained={**sd2d, "layer1.0.conv1.weight": torch.zeros(64, 32, 3, 3)},
                              preset="light")


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="preset"):
        SparseResUNet(preset="huge")
    with pytest.raises(ValueError, match="devoxelize"):
        SparseResUNet(preset="light", devoxelize="cubic")
    with pytest.raises(ValueError, match="decoder_channels"):
        SparseResUNet(preset="light", decoder_channels=(8, 8))
    net = SparseResUNet("resnet18", 6, 3, preset="light")
    x = SparseTensor(torch.randn(4, 3), torch.zeros(4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="in_channels=6"):
        net(x)
