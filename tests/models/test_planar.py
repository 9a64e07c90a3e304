"""Inflation checked through the real sparse engine: planar equivalence, constant fields, axis table."""
import pytest
import torch

from i2p.inflate import PLANE_AXES, InflateConfig, inflate_kernel, kernel_index
from i2p.sparse import Conv3d, SparseTensor, get_kernel_offsets
from models.backbones.planar import build_planar_pair, planar_errors
from models.weights import load_pretrained

TOL = 1e-4  # relative to the largest 2D activation of the stage (float32)
FAMILIES = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    # grouped bottlenecks (ResNeXt), reduced width so the test stays fast
    "resnext_small": dict(block="bottleneck", layers=(2, 2, 2, 2), channels=(16, 32, 64, 128),
                          cardinality=8, base_width=8),
}


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(2, 3, 26, 18)  # non-square and odd sizes at several stages


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request):
    return build_planar_pair(FAMILIES[request.param], "copy", "y", seed=1)


def _rel_errors(m3, m2, images, axis):
    return [r["max_abs_err"] / r["max_abs_ref"] for r in planar_errors(m3, m2, images, axis)]


@pytest.mark.parametrize("mode", ["copy", "center"])
@pytest.mark.parametrize("axis", ["y", "z", "x"])
def test_planar_equivalence(pair, images, mode, axis):
    m2, m3 = pair
    load_pretrained(m3, m2, InflateConfig(mode, axis, m3.shortcut))
    errs = _rel_errors(m3, m2, images, axis)
    assert len(errs) == 5 and max(errs) < TOL, errs


def test_planar_check_can_fail(images):
    """The check detects a wrong kernel mode, a wrong plane and the summing `repeat` shortcut."""
    from models.backbones import SparseResNet
    spec = dict(block="basic", layers=(1, 1, 1, 1), channels=(64, 16, 16, 16))  # no layer1 projection
    m2, m3 = build_planar_pair(spec, "inflate", "y")
    assert _rel_errors(m3, m2, images, "y")[0] > 1e-2  # kernels divided by 7
    load_pretrained(m3, m2, InflateConfig("copy", "z", m3.shortcut))
    assert _rel_errors(m3, m2, images, "y")[0] > 1e-2  # inflated along z, image orthogonal to y
    rep = SparseResNet(num_classes=10, stem="inflate", shortcut="repeat", **spec)
    load_pretrained(rep, m2, InflateConfig("copy", "y", rep.shortcut))
    errs = _rel_errors(rep, m2, images, "y")
    assert max(errs[:2]) < TOL and errs[2] > 1e-2  # layer2 holds the first (stride-2) projection


def _dense_cube(n: int, channels: int, value=None):
    r = torch.arange(n)
    x, y, z = torch.meshgrid(r, r, r, indexing="ij")
    coords = torch.stack([torch.zeros_like(x), x, y, z], -1).reshape(-1, 4).int()
    feats = torch.zeros(len(coords), channels) if value is None else value.expand(len(coords), channels).clone()
    return SparseTensor(feats, coords)


def _conv_with(kernel: torch.Tensor, k: int) -> Conv3d:
    conv = Conv3d(kernel.shape[1], kernel.shape[2], k)
    with torch.no_grad():
        conv.kernel.copy_(kernel)
    return conv


@pytest.mark.parametrize("k", [3, 7])
def test_constant_field_3d(k):
    """Inflate keeps the 2D response to a constant field, copy multiplies it by k, center equals it."""
    torch.manual_seed(0)
    w = torch.randn(4, 2, k, k)
    c = torch.tensor([[0.7, -1.3]])
    resp2d = (w * c[0][None, :, None, None]).sum((1, 2, 3))  # interior response of the 2D conv
    n = k + 2
    x = _dense_cube(n, 2, c)
    centre = ((x.coords[:, 1:] == n // 2).all(1)).nonzero().item()
    for mode, factor in (("inflate", 1.0), ("copy", float(k)), ("center", 1.0)):
        out = _conv_with(inflate_kernel(w, mode, "y"), k)(x).feats[centre]
        torch.testing.assert_close(out, factor * resp2d, rtol=1e-5, atol=1e-5)


def test_engine_offsets_match_inflate_layout():
    for k in (1, 3, 7):
        engine = get_kernel_offsets((k, k, k), (1, 1, 1), (1, 1, 1))
        assert [kernel_index(tuple(off), k) for off in engine.tolist()] == list(range(k ** 3))


@pytest.mark.parametrize("axis", ["y", "z", "x"])
def test_axis_table_through_engine(axis):
    """A delta at the cube centre: the conv output at c is the kernel entry at offset centre - c."""
    rows_axis, cols_axis = PLANE_AXES[axis]
    col = {"x": 1, "y": 2, "z": 3}
    w = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # distinct entries, W[row, col] = 3*row + col + 1
    x = _dense_cube(3, 1)
    centre = ((x.coords[:, 1:] == 1).all(1)).nonzero().item()
    x.feats[centre] = 1.0
    out = _conv_with(inflate_kernel(w, "center", axis), 3)(x).feats[:, 0]
    for i, c in enumerate(x.coords.tolist()):
        row, column, depth = 2 - c[col[rows_axis]], 2 - c[col[cols_axis]], 1 - c[col[axis]]
        expected = w[0, 0, row, column].item() if depth == 0 else 0.0
        assert out[i].item() == expected, (axis, c)
