"""Sparse convolution against dense `F.conv3d` / `F.conv_transpose3d`, offsets and layout."""
import pytest
import torch
import torch.nn.functional as F

from i2p.sparse import Conv3d, SparseTensor, conv3d, get_kernel_offsets
from tests.helpers.sparse import dense_grid, dense_weight, random_sparse, sample

SIZE = 6


def dense_reference(x: SparseTensor, kernel: torch.Tensor, k: int, d: int, groups: int) -> torch.Tensor:
    """Stride-1 dense conv of the zero-filled grid whose value at o is sum_k W_k x[o + d·off_k]."""
    w = dense_weight(kernel, k)
    p = (k - 1) // 2
    lo, hi = d * p, d * (k - 1 - p)
    xd = F.pad(dense_grid(x, SIZE), (lo, hi) * 3)
    return F.conv3d(xd, w, dilation=d, groups=groups)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("d", [1, 2])
def test_conv_matches_dense(k, s, d, dtype):
    x = random_sparse(batch=2, size=SIZE, channels=4, dtype=dtype, seed=k * 10 + s + d)
    conv = Conv3d(4, 5, k, stride=s, dilation=d).to(dtype)
    y = conv(x)
    ref = dense_reference(x, conv.kernel.detach(), k, d, 1)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert y.stride == (s, s, s)
    torch.testing.assert_close(y.feats, sample(ref, y.coords), atol=tol, rtol=tol)
    if s == 1:
        assert torch.equal(y.coords, x.coords)
    else:  # outputs are exactly the unique floor(c / s)·s
        expect = torch.unique(torch.div(x.coords, torch.tensor([1, s, s, s], dtype=torch.int32),
                                        rounding_mode="floor") * torch.tensor([1, s, s, s], dtype=torch.int32), dim=0)
        assert torch.equal(torch.unique(y.coords, dim=0), expect)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_strided_conv_is_dense_strided_conv(k):
    """Odd k, padding k//2, stride 2: dense out[i] equals the sparse output at o = 2i."""
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=k)
    conv = Conv3d(3, 2, k, stride=2).double()
    y = conv(x)
    ref = F.conv3d(dense_grid(x, SIZE), dense_weight(conv.kernel.detach(), k), stride=2, padding=k // 2)
    torch.testing.assert_close(y.feats, sample(ref, y.coords, (2, 2, 2)))


@pytest.mark.parametrize("groups,cin,cout", [(2, 4, 6), (4, 4, 4), (3, 6, 3)])
@pytest.mark.parametrize("k,s", [(3, 1), (2, 2), (3, 2)])
def test_grouped_conv_matches_dense(groups, cin, cout, k, s):
    x = random_sparse(batch=2, size=SIZE, channels=cin, seed=groups)
    conv = Conv3d(cin, cout, k, stride=s, groups=groups).double()
    assert conv.kernel.shape == (k ** 3, cin // groups, cout)
    y = conv(x)
    ref = dense_reference(x, conv.kernel.detach(), k, 1, groups)
    torch.testing.assert_close(y.feats, sample(ref, y.coords))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("d", [1, 2])
def test_transposed_conv_matches_dense(k, d, dtype):
    x = random_sparse(batch=2, size=SIZE, channels=3, dtype=dtype, seed=k + d)
    down = Conv3d(3, 4, 2, stride=2).to(dtype)(x)
    up = Conv3d(4, 3, k, stride=2, dilation=d, transposed=True).to(dtype)
    y = up(down)
    assert torch.equal(y.coords, x.coords) and y.stride == (1, 1, 1)
    w = dense_weight(up.kernel.detach(), k).transpose(0, 1)  # conv_transpose3d wants [Cin, Cout, ...]
    ref = F.conv_transpose3d(dense_grid(down, SIZE // 2), w, stride=2, dilation=d)
    ref = F.pad(ref, (0, 4) * 3)
    p = d * ((k - 1) // 2)
    c = y.coords.long()
    got = ref[c[:, 0], :, c[:, 1] + p, c[:, 2] + p, c[:, 3] + p]
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(y.feats, got, atol=tol, rtol=tol)


@pytest.mark.parametrize("k,pad,out_pad", [(2, 0, 0), (3, 1, 1)])
def test_transposed_conv_is_dense_conv_transpose(k, pad, out_pad):
    """k2/s2 (padding 0) and k3/s2 (padding 1, output_padding 1) equal dense conv_transpose3d."""
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=7)
    down = Conv3d(3, 4, 2, stride=2).double()(x)
    up = Conv3d(4, 2, k, stride=2, transposed=True).double()
    y = up(down)
    w = dense_weight(up.kernel.detach(), k).transpose(0, 1)
    ref = F.conv_transpose3d(dense_grid(down, SIZE // 2), w, stride=2, padding=pad, output_padding=out_pad)
    assert ref.shape[-1] == SIZE
    torch.testing.assert_close(y.feats, sample(ref, y.coords))


def test_conv_at_coarser_level_matches_dense():
    """Offsets scale with the tensor stride: a submanifold conv at stride 2 is a dense conv on the coarse grid."""
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=3)
    down = Conv3d(3, 4, 2, stride=2).double()(x)
    conv = Conv3d(4, 2, 3).double()
    y = conv(down)
    assert y.stride == (2, 2, 2)
    ref = F.conv3d(dense_grid(down, SIZE // 2), dense_weight(conv.kernel.detach(), 3), padding=1)
    torch.testing.assert_close(y.feats, sample(ref, y.coords, (2, 2, 2)))


def test_offset_order_pinned():
    """Torchsparse's get_kernel_offsets: x fastest for odd K, z fastest for even K."""
    o3 = get_kernel_offsets((3, 3, 3), (1, 1, 1), (1, 1, 1)).tolist()
    assert o3[:4] == [[-1, -1, -1], [0, -1, -1], [1, -1, -1], [-1, 0, -1]]
    assert o3[13] == [0, 0, 0] and o3[26] == [1, 1, 1]
    o2 = get_kernel_offsets((2, 2, 2), (2, 2, 2), (1, 1, 1)).tolist()
    assert o2 == [[0, 0, 0], [0, 0, 2], [0, 2, 0], [0, 2, 2], [2, 0, 0], [2, 0, 2], [2, 2, 0], [2, 2, 2]]
    o4 = get_kernel_offsets((4, 4, 4), (1, 1, 1), (2, 2, 2))
    assert o4[0].tolist() == [-2, -2, -2] and o4[1].tolist() == [-2, -2, 0] and o4[-1].tolist() == [4, 4, 4]


def test_hand_computed_example():
    """Two voxels at (0,0,0) and (1,0,0); kernel[k] = (k+1)·I.

    Voxel A sees B at offset (+1,0,0), which is index 14 (x fastest: 13 is the centre); B sees A at
    (-1,0,0), index 12.
    """
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int32)
    feats = torch.tensor([[1.0, 2.0], [10.0, 20.0]], dtype=torch.float64)
    x = SparseTensor(feats, coords)
    kernel = torch.stack([(k + 1) * torch.eye(2, dtype=torch.float64) for k in range(27)])
    y = conv3d(x, kernel, kernel_size=3)
    expect = torch.tensor([[14 * 1 + 15 * 10, 14 * 2 + 15 * 20],
                           [14 * 10 + 13 * 1, 14 * 20 + 13 * 2]], dtype=torch.float64)
    torch.testing.assert_close(y.feats, expect)
    # weight layout [K, in, out]: out = x @ W, so an asymmetric centre weight picks rows of x
    w = torch.zeros(27, 2, 3, dtype=torch.float64)
    w[13] = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    torch.testing.assert_close(conv3d(x, w, kernel_size=3).feats,
                               torch.tensor([[1.0, 0, 2.0], [10.0, 0, 20.0]], dtype=torch.float64))
    # k=2 s=2: both voxels fall in cell (0,0,0); A at offset (0,0,0) index 0, B at (1,0,0) index 4
    k2 = torch.stack([(k + 1) * torch.eye(2, dtype=torch.float64) for k in range(8)])
    y2 = conv3d(x, k2, kernel_size=2, stride=2)
    assert y2.coords.tolist() == [[0, 0, 0, 0]]
    torch.testing.assert_close(y2.feats, torch.tensor([[1 * 1 + 5 * 10, 1 * 2 + 5 * 20]], dtype=torch.float64))


def test_batch_independence():
    x = random_sparse(batch=3, size=SIZE, channels=3, seed=11)
    net = torch.nn.Sequential(Conv3d(3, 4, 3), Conv3d(4, 4, 2, stride=2), Conv3d(4, 4, 3),
                              Conv3d(4, 3, 2, stride=2, transposed=True)).double()
    y = net(x)
    for b in range(3):
        m = x.coords[:, 0] == b
        xb = SparseTensor(x.feats[m], x.coords[m].clone().index_fill_(1, torch.tensor([0]), 0))
        yb = net(xb)
        my = y.coords[:, 0] == b
        # same coordinates in the same order, same features
        assert torch.equal(y.coords[my][:, 1:], yb.coords[:, 1:])
        torch.testing.assert_close(y.feats[my], yb.feats)


def test_kernel_map_cache_reused():
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=5, dtype=torch.float32)
    a, b = Conv3d(3, 3, 3), Conv3d(3, 3, 3)
    ya = a(x)
    n = len(x.cache.kmaps)
    key = ((1, 1, 1), (3, 3, 3), (1, 1, 1), (1, 1, 1), False)
    first = x.cache.kmaps[key]
    yb = b(ya)
    assert ya.cache is x.cache and yb.cache is x.cache
    assert len(x.cache.kmaps) == n and x.cache.kmaps[key] is first
    d1 = Conv3d(3, 3, 2, stride=2)(yb)
    d2 = Conv3d(3, 3, 2, stride=2)(yb)
    assert d1.coords is d2.coords
    up = Conv3d(3, 3, 2, stride=2, transposed=True)(d1)
    assert up.coords is x.coords


def test_transposed_without_downsample_raises():
    x = random_sparse(batch=1, size=4, channels=2, stride=2, dtype=torch.float32)
    with pytest.raises(ValueError, match="stride"):
        Conv3d(2, 2, 2, stride=2, transposed=True)(x)


def test_conv_bias_and_k1_shape():
    conv = Conv3d(3, 5, 1, bias=True)
    assert conv.kernel.shape == (3, 5) and conv.bias.shape == (5,)
    x = random_sparse(channels=3, dtype=torch.float32)
    torch.testing.assert_close(conv(x).feats, x.feats @ conv.kernel + conv.bias)


def test_sorted_search_path_equals_table_path(monkeypatch):
    """Both kernel-map search paths (direct table, sorted keys) give the same maps."""
    import i2p.sparse.kmap as kmap_module
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=21)
    conv = Conv3d(3, 2, 3, stride=2).double()
    sub = Conv3d(3, 2, 3).double()
    ref_s, ref_d = sub(x).feats, conv(x).feats
    assert any(i.table is not None for i in x.cache.indices.values())
    monkeypatch.setattr(kmap_module, "TABLE_CELLS_PER_VOXEL", 0)
    y = SparseTensor(x.feats, x.coords)
    torch.testing.assert_close(sub(y).feats, ref_s)
    torch.testing.assert_close(conv(y).feats, ref_d)
    assert all(i.table is None for i in y.cache.indices.values())


def test_negative_coordinates():
    """Negative coordinates (sparse_quantize does not shift) convolve like shifted ones."""
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=22)
    c = x.coords.clone()
    c[:, 1:] -= 4
    y = SparseTensor(x.feats, c)
    for conv in (Conv3d(3, 2, 3).double(), Conv3d(3, 2, 2, stride=2).double(), Conv3d(3, 2, 3, stride=2).double()):
        a, b = conv(x), conv(y)
        # shifting by -4 (a multiple of 2) keeps the down-sampling cells aligned
        torch.testing.assert_close(b.feats, a.feats)
        assert torch.equal(b.coords[:, 1:] + 4, a.coords[:, 1:])


@pytest.mark.parametrize("cin,cout,k,s", [(64, 64, 3, 1), (5, 70, 3, 1), (33, 128, 2, 2), (64, 16, 3, 2), (7, 3, 1, 1)])
def test_native_kernels_match_pure_path(cin, cout, k, s):
    """The compiled float32 path this machine picks equals the pure PyTorch path, fwd and bwd.

    Every variant separately: tests/sparse/test_native.py.
    """
    from i2p.sparse import native
    from i2p.sparse.backends.i2p_backend import force_impl
    if native.lib() is None:
        pytest.skip(f"no compiled kernels here: {native.status()}")
    x = random_sparse(batch=2, size=8, channels=cin, dtype=torch.float32, seed=cin + k)
    conv = Conv3d(cin, cout, k, stride=s)
    results = []
    for impl in ("native", "loop"):
        with force_impl(impl):
            f = x.feats.clone().requires_grad_(True)
            conv.kernel.grad = None
            y = conv(x.replace(f))
            (y.feats * torch.linspace(-1, 1, y.feats.numel()).view_as(y.feats)).sum().backward()
        results.append((y.feats.detach(), f.grad, conv.kernel.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [(2, 2, 2), (2, 1, 2), (1, 2, 2)])
def test_cell_fast_path_equals_search(k, monkeypatch):
    """Strided convs whose kernel is their stride cell skip the coordinate search; same map."""
    import i2p.sparse.kmap as kmap_module
    x = random_sparse(batch=2, size=SIZE, channels=3, seed=31)
    conv = Conv3d(3, 2, k, stride=k).double()
    calls = []
    real = kmap_module._cell_pairs
    monkeypatch.setattr(kmap_module, "_cell_pairs", lambda *a: calls.append(1) or real(*a))
    fast = conv(x)
    assert calls
    monkeypatch.setattr(kmap_module, "_cell_pairs", lambda *a: None)
    slow = conv(SparseTensor(x.feats, x.coords))
    assert torch.equal(fast.coords, slow.coords)
    torch.testing.assert_close(fast.feats, slow.feats)
