"""SparseTensor validation, helpers, quantize/collate, pooling, devoxelize and to_dense."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from i2p.sparse import (
    Elementwise,
    LeakyReLU,
    MaxPool3d,
    ReLU,
    SparseTensor,
    cat,
    devoxelize,
    global_avg_pool,
    global_max_pool,
    sparse_collate,
    sparse_quantize,
    to_dense,
)
from tests.helpers.sparse import dense_grid, random_sparse, sample


def coords4(rows):
    return torch.tensor(rows, dtype=torch.int32)


def test_validation_names_the_argument():
    c = coords4([[0, 0, 0, 0], [0, 1, 0, 0]])
    f = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(f, c.long())
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(f, c.float())
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(f, c[:, :3])
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="feats"):
        SparseTensor(torch.zeros(3, 3), c)
    with pytest.raises(ValueError, match="feats"):
        SparseTensor(torch.zeros(2), c)
    with pytest.raises(ValueError, match="stride"):
        SparseTensor(f, c, stride=0)
    with pytest.raises(ValueError, match="stride"):
        SparseTensor(f, c, stride=-2)
    with pytest.raises(ValueError, match="stride"):
        SparseTensor(f, c, stride=(1, 2))
    with pytest.raises(ValueError, match="stride"):  # coords not multiples of the stride
        SparseTensor(f, c, stride=2)
    with pytest.raises(ValueError, match="coords"):
        SparseTensor(f, coords4([[-1, 0, 0, 0], [0, 1, 0, 0]]))


def test_tensor_helpers():
    c = coords4([[0, 0, 0, 0], [1, -2, 4, 6]])
    x = SparseTensor(torch.ones(2, 3), c, stride=2)
    assert x.stride == (2, 2, 2) and x.batch_size == 2 and len(x) == 2
    assert SparseTensor(torch.ones(2, 3), c, stride=(1, 2, 2)).stride == (1, 2, 2)
    y = x.replace(torch.zeros(2, 5))
    assert y.cache is x.cache and y.coords is x.coords and y.stride == x.stride
    assert x.with_feats(torch.zeros(2, 1)).cache is x.cache
    z = x.to(torch.float64)
    assert z.feats.dtype == torch.float64 and z.cache is x.cache
    assert x.cpu().feats.device.type == "cpu"
    with pytest.raises(ValueError, match="feats"):
        x.replace(torch.zeros(3, 1))


def test_activations_and_cat():
    x = random_sparse(channels=3, dtype=torch.float32)
    assert torch.equal(ReLU()(x).feats, x.feats.clamp(min=0))
    assert torch.equal(LeakyReLU(0.1)(x).feats, F.leaky_relu(x.feats, 0.1))
    assert torch.equal(Elementwise(torch.nn.Tanh())(x).feats, torch.tanh(x.feats))
    y = cat([x, ReLU()(x)])
    assert y.feats.shape == (len(x), 6) and y.cache is x.cache
    other = random_sparse(channels=3, dtype=torch.float32, seed=99)
    with pytest.raises(ValueError, match="tensors"):
        cat([x, other])


def test_sparse_quantize_matches_floor():
    g = np.random.default_rng(0)
    pts = g.normal(size=(500, 3)).astype(np.float32)
    coords, index, inverse = sparse_quantize(pts, 0.3)
    assert coords.dtype == torch.int32 and coords.shape[1] == 3
    floor = torch.floor(torch.as_tensor(pts, dtype=torch.float64) / 0.3).int()
    assert (coords < 0).any()  # negative coordinates are kept, no shift
    assert torch.equal(coords[inverse], floor)
    assert torch.equal(coords, floor[index])
    assert len(torch.unique(coords, dim=0)) == len(coords)
    c2, _, inv2 = sparse_quantize(torch.as_tensor(pts), (0.3, 0.3, 0.6))
    assert torch.equal(c2[inv2][:, 2], torch.floor(torch.as_tensor(pts[:, 2], dtype=torch.float64) / 0.6).int())
    with pytest.raises(ValueError, match="voxel_size"):
        sparse_quantize(pts, 0.0)
    with pytest.raises(ValueError, match="points"):
        sparse_quantize(pts[:, :2], 0.1)


def test_sparse_collate():
    a = (np.array([[0, 0, 0], [1, 2, 3]]), np.ones((2, 4), np.float32))
    b = (torch.tensor([[5, 5, 5]]), torch.zeros(1, 4))
    x, offsets = sparse_collate([a, b])
    assert offsets.tolist() == [0, 2, 3]
    assert x.coords.tolist() == [[0, 0, 0, 0], [0, 1, 2, 3], [1, 5, 5, 5]]
    assert x.coords.dtype == torch.int32 and x.batch_size == 2
    with pytest.raises(ValueError, match="feats"):
        sparse_collate([(np.zeros((2, 3), int), np.zeros((3, 1)))])
    with pytest.raises(ValueError, match="coords"):
        sparse_collate([(np.zeros((2, 3)), np.zeros((2, 1)))])


@pytest.mark.parametrize("k,s", [(3, 1), (2, 2), (3, 2)])
def test_max_pool_matches_dense_over_active(k, s):
    """Max over active neighbours only = dense max-pool of a grid filled with -inf at empty cells."""
    x = random_sparse(batch=2, size=6, channels=3, seed=k + s)
    y = MaxPool3d(k, s)(x)
    grid = dense_grid(x, 6)
    occupied = dense_grid(x.replace(torch.ones(len(x), 1, dtype=torch.float64)), 6) > 0
    grid = grid.masked_fill(~occupied, float("-inf"))
    p = (k - 1) // 2
    ref = F.max_pool3d(F.pad(grid, (p, k - 1 - p) * 3, value=float("-inf")), k, stride=1)
    torch.testing.assert_close(y.feats, sample(ref, y.coords))
    assert y.stride == (s,) * 3


def test_global_pools():
    x = random_sparse(batch=3, size=5, channels=4, seed=1)
    avg, mx = global_avg_pool(x), global_max_pool(x)
    for b in range(3):
        m = x.coords[:, 0] == b
        torch.testing.assert_close(avg[b], x.feats[m].mean(0))
        torch.testing.assert_close(mx[b], x.feats[m].max(0).values)


def test_to_dense():
    x = random_sparse(batch=2, size=5, channels=2, seed=3)
    d = to_dense(x, (5, 5, 5))
    assert d.shape == (2, 2, 5, 5, 5)
    torch.testing.assert_close(d, dense_grid(x, 5))
    c = x.coords.clone()
    c[:, 1:] -= 3  # negative coordinates: inferred origin is the minimum
    d2 = to_dense(SparseTensor(x.feats, c))
    assert d2.shape[2:] == (5, 5, 5)
    with pytest.raises(ValueError, match="spatial_shape"):
        to_dense(x, (2, 2, 2))


def test_devoxelize_nearest_and_trilinear():
    pts = torch.tensor([[0.05, 0.05, 0.05], [0.1, 0.1, 0.1], [0.149, 0.05, 0.05], [0.95, 0.95, 0.95]],
                       dtype=torch.float64)
    coords, index, inverse = sparse_quantize(pts, 0.1)
    feats = torch.arange(len(coords) * 2, dtype=torch.float64).view(-1, 2)
    x, _ = sparse_collate([(coords, feats)])
    near = devoxelize(x, pts, voxel_size=0.1)
    torch.testing.assert_close(near, feats[inverse])
    # outside every active voxel -> zeros
    assert devoxelize(x, torch.tensor([[5.0, 5.0, 5.0]], dtype=torch.float64), voxel_size=0.1).abs().sum() == 0
    tri = devoxelize(x, pts, voxel_size=0.1, mode="trilinear")
    # point 0 is exactly at the centre of voxel (0,0,0): its features
    torch.testing.assert_close(tri[0], feats[inverse[0]])
    # point (0.1, 0.1, 0.1) sits at the corner shared by 8 cells; active: (0,0,0) and (1,1,1) -> mean
    both = feats[inverse[0]] / 2 + feats[inverse[1]] / 2
    torch.testing.assert_close(tri[1], both)
    # x = 1.49 cells: 1% of the way from centre (0,0,0) to 99% at centre (1,0,0), both active
    torch.testing.assert_close(tri[2], 0.01 * feats[inverse[0]] + 0.99 * feats[inverse[2]])
    # [P, 4] with batch first is accepted
    p4 = torch.cat([torch.zeros(4, 1, dtype=torch.float64), pts], 1)
    torch.testing.assert_close(devoxelize(x, p4, voxel_size=0.1), near)
    with pytest.raises(ValueError, match="mode"):
        devoxelize(x, pts, mode="cubic")


def test_devoxelize_trilinear_is_linear_on_full_grid():
    """On a fully active grid, trilinear devoxelisation of a linear field is exact."""
    n = 4
    xyz = torch.stack(torch.meshgrid(*(torch.arange(n),) * 3, indexing="ij"), -1).view(-1, 3)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).int()
    centres = (xyz.double() + 0.5) * 0.2
    field = centres @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = SparseTensor(field[:, None], coords)
    pts = 0.1 + torch.rand(50, 3, dtype=torch.float64) * (0.2 * (n - 1))
    got = devoxelize(x, pts, voxel_size=0.2, mode="trilinear")[:, 0]
    torch.testing.assert_close(got, pts @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
