"""Semantics a torchsparse / spconv user meets.

The padded strided rule, devoxelize alignment, torchsparse 2.x kernel-1 checkpoints, coordinates
that do not fit.
"""
import pytest
import torch
import torch.nn.functional as F

from i2p.sparse import Conv3d, MaxPool3d, SparseTensor, devoxelize, max_pool3d, sparse_quantize
from tests.helpers.sparse import dense_grid, dense_weight, random_sparse

SIZE = 6


@pytest.mark.parametrize("k", [3, 5])
def test_padded_rule_is_spconv_strided_conv(k):
    """padding_rule="padded" gives the dense strided conv's sites and values.

    Outputs wherever the dense conv (stride 2, padding (k-1)//2) has an input in its window, on an
    unbounded grid (both edges kept), with the dense values.
    """
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=k)
    conv = Conv3d(3, 2, k, stride=2, padding_rule="padded").double()
    y = conv(x)
    p = (k - 1) // 2
    lo = 2 * ((p + 1) // 2)  # an even margin below 0, so the low-edge outputs exist too (unbounded grid)
    grid = F.pad(dense_grid(x, SIZE), (lo, 2 * p) * 3)
    ref = F.conv3d(grid, dense_weight(conv.kernel.detach(), k), stride=2, padding=p)
    support = F.conv3d((grid.abs().sum(1, keepdim=True) > 0).double(), torch.ones(1, 1, k, k, k, dtype=torch.float64),
                       stride=2, padding=p)[:, 0] > 0
    expect = torch.nonzero(support)
    expect[:, 1:] = expect[:, 1:] * 2 - lo
    assert torch.equal(torch.unique(y.coords.long(), dim=0), torch.unique(expect, dim=0))
    c = y.coords.long()
    cell = (c[:, 1:] + lo) // 2
    torch.testing.assert_close(y.feats, ref[c[:, 0], :, cell[:, 0], cell[:, 1], cell[:, 2]])
    floor = Conv3d(3, 2, k, stride=2).double()(SparseTensor(x.feats, x.coords))
    fset = {tuple(r) for r in floor.coords.tolist()}
    assert fset < {tuple(r) for r in y.coords.tolist()}  # the floor rule's sites are a strict subset


def test_padded_rule_equals_floor_when_kernel_fits_the_stride():
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=1, dtype=torch.float32)
    a = Conv3d(3, 2, 2, stride=2, padding_rule="padded")(x)
    b = Conv3d(3, 2, 2, stride=2)(SparseTensor(x.feats, x.coords))
    assert torch.equal(a.coords, b.coords)
    Conv3d(3, 2, 1, stride=2, padding_rule="floor")(x)  # k1/s2 reaches the same level: no conflict


def test_one_rule_per_level_and_transposed_return():
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=2, dtype=torch.float32)
    down = Conv3d(3, 4, 3, stride=2, padding_rule="padded")(x)
    with pytest.raises(ValueError, match="padding_rule='padded'.*padding_rule='floor'"):
        Conv3d(3, 4, 3, stride=2)(x)
    with pytest.raises(ValueError, match="made with padding_rule"):
        max_pool3d(x, 3, 2)
    assert max_pool3d(x, 3, 2, padding_rule="padded").coords is down.coords
    up = Conv3d(4, 3, 3, stride=2, transposed=True)(down)
    assert torch.equal(up.coords, x.coords)
    with pytest.raises(ValueError, match="padding_rule"):
        Conv3d(3, 3, 3, stride=2, padding_rule="same")


def test_devoxelize_centre_and_corner():
    """Voxels at x = 0 (features a) and x = 1 (b), hand-computed.

    A point at the centre of voxel 0 (x = 0.5) gets a with the centre convention, (a + b) / 2 with
    SPVCNN's corner convention; at x = 1.0 the reverse.
    """
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x = SparseTensor(feats, coords)
    pts = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    centre = devoxelize(x, pts, mode="trilinear", align="centre")
    corner = devoxelize(x, pts, mode="trilinear", align="corner")
    torch.testing.assert_close(centre[0], feats[0])
    torch.testing.assert_close(centre[1], feats.mean(0))
    torch.testing.assert_close(corner[1], feats[1])
    torch.testing.assert_close(corner[2], feats[1])
    torch.testing.assert_close(corner[0], feats.mean(0))
    with pytest.raises(ValueError, match="align"):
        devoxelize(x, pts, mode="trilinear", align="center-ish")


def test_devoxelize_corner_is_spvcnn_weights():
    """The corner convention reproduces torchsparse's calc_ti_weights (re-derived here).

    Weights (pc - p)·... over the 8 cells floor(p) + {0, 1}³, missing cells dropped and renormalised.
    """
    x = random_sparse(batch=1, size=6, channels=2, seed=4, density=0.7)
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(40, 3, generator=g, dtype=torch.float64) * 5
    got = devoxelize(x, pts, mode="trilinear", align="corner")
    table = {tuple(c[1:]): f for c, f in zip(x.coords.tolist(), x.feats)}
    for p, out in zip(pts, got):
        f = torch.floor(p)
        acc, wsum = torch.zeros(2, dtype=torch.float64), 0.0
        for d in torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 3):
            w = torch.prod(torch.where(d.bool(), p - f, 1 - (p - f)))
            key = tuple((f + d).long().tolist())
            if key in table:
                acc, wsum = acc + w * table[key], wsum + float(w)
        torch.testing.assert_close(out, acc / wsum if wsum else acc)


def test_kernel1_accepts_torchsparse2_checkpoint_layout():
    conv = Conv3d(4, 6, 1, stride=2)
    w = torch.randn(1, 4, 6)
    conv.load_state_dict({"kernel": w})
    assert conv.kernel.shape == (4, 6) and torch.equal(conv.kernel.detach(), w[0])
    conv.load_state_dict({"kernel": w[0].clone()})  # our own layout still loads
    with pytest.raises(RuntimeError, match="size mismatch"):
        conv.load_state_dict({"kernel": torch.randn(2, 4, 6)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        Conv3d(4, 6, 3).load_state_dict({"kernel": torch.randn(1, 4, 6)})


def test_sparse_quantize_refuses_coordinates_past_int32():
    pts = torch.rand(100, 3, dtype=torch.float64)
    pts[57, 1] = 3.0e9
    with pytest.raises(ValueError, match=r"point 57 = \[.*3000000000\.0.*int32"):
        sparse_quantize(pts, 1.0)
    pts[57, 1] = 3.0e7  # fits int32
    sparse_quantize(pts, 1.0)
    pts[3, 0] = float("inf")
    with pytest.raises(ValueError, match="point 3 ="):
        sparse_quantize(pts, 0.05)
    edge = torch.tensor([[2.0 ** 31 - 1, 0, 0], [-(2.0 ** 31), 0, 0]], dtype=torch.float64)
    coords, _, _ = sparse_quantize(edge, 1.0)
    assert coords[:, 0].tolist() == [-(2 ** 31), 2 ** 31 - 1]


def test_far_garbage_point_falls_back_to_a_hash_index():
    """A garbage point far away: the level is hashed, every layer unchanged for the other points.

    One point 2^30 voxels away on every axis (and a batch index) makes the packed box exceed 62 bits.
    """
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=8)
    far = torch.tensor([[1, 2 ** 30, 2 ** 30, -(2 ** 30)]], dtype=torch.int32)
    y = SparseTensor(torch.cat([x.feats, torch.randn(1, 3, dtype=x.feats.dtype)]), torch.cat([x.coords, far]))
    n = len(x)
    layers = [Conv3d(3, 4, 3).double(), Conv3d(3, 4, 2, stride=2).double(), Conv3d(3, 4, 3, stride=2).double()]
    for conv in layers:
        a, b = conv(SparseTensor(x.feats, x.coords)), conv(y)
        keep = ~(b.coords[:, 1:].abs() >= 2 ** 29).any(1)
        order_a = torch.argsort(a.coords[:, 0].long() * 1000 + a.coords[:, 1].long() * 100 + a.coords[:, 2] * 10
                                + a.coords[:, 3])
        cb, fb = b.coords[keep], b.feats[keep]
        order_b = torch.argsort(cb[:, 0].long() * 1000 + cb[:, 1].long() * 100 + cb[:, 2] * 10 + cb[:, 3])
        assert torch.equal(a.coords[order_a], cb[order_b])
        torch.testing.assert_close(a.feats[order_a], fb[order_b])
    assert any(i.hashed for i in y.cache.indices.values())
    up = Conv3d(4, 3, 2, stride=2, transposed=True).double()(Conv3d(3, 4, 2, stride=2).double()(y))
    assert torch.equal(up.coords, y.coords)
    pooled = MaxPool3d(3, 1)(y)
    torch.testing.assert_close(pooled.feats[n], y.feats[n])  # alone in its window
    pts = torch.tensor([[2.0 ** 30 + 0.5, 2.0 ** 30 + 0.5, -(2.0 ** 30) + 0.5]], dtype=torch.float64)
    torch.testing.assert_close(devoxelize(y, pts, torch.tensor([1])), y.feats[n:])
