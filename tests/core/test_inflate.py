"""Pure tests of i2p.inflate: layout, axis table, modes, state-dict conversion (no sparse engine)."""
import pytest
import timm
import torch

from i2p.inflate import (
    InflateConfig,
    inflate_kernel,
    inflate_state_dict,
    kernel_index,
    normalize_depth_axis,
    pointwise_kernel,
    repeat_kernel,
)
from i2p.sparse import get_kernel_offsets

AXES = {"x": 0, "y": 1, "z": 2}


def test_kernel_offsets_follow_torchsparse_order():
    # odd: z outer, y, x inner; even: x outer, y, z inner (docs/engine.md)
    r3 = [-1, 0, 1]
    odd = [[x, y, z] for z in r3 for y in r3 for x in r3]
    assert get_kernel_offsets(3).tolist() == odd
    r2 = [0, 1]
    even = [[x, y, z] for x in r2 for y in r2 for z in r2]
    assert get_kernel_offsets(2).tolist() == even
    assert get_kernel_offsets(3, tensor_stride=4).abs().max() == 4
    assert get_kernel_offsets(7).shape == (343, 3) and get_kernel_offsets(7)[0].tolist() == [-3, -3, -3]
    for i, off in enumerate(get_kernel_offsets(3).tolist()):
        assert kernel_index(tuple(off), 3) == i


def test_official_aliases():
    assert normalize_depth_axis("z-axis") == "y"
    assert normalize_depth_axis("y-axis") == "z"
    assert normalize_depth_axis("x-axis") == "x"
    assert normalize_depth_axis("Y") == "y"
    with pytest.raises(ValueError, match="depth_axis"):
        normalize_depth_axis("w")
    with pytest.raises(ValueError, match="kernel_mode"):
        InflateConfig(kernel_mode="mean")
    with pytest.raises(ValueError, match="shortcut"):
        InflateConfig(shortcut="avg")


def _distinct_kernel(k: int = 3) -> torch.Tensor:
    w = torch.zeros(1, 1, k, k)
    for i in range(k):
        for j in range(k):
            w[0, 0, i, j] = 10 * (i + 1) + (j + 1)  # row i, col j -> "ij" as a number
    return w


@pytest.mark.parametrize("axis", ["y", "z", "x"])
@pytest.mark.parametrize("mode", ["copy", "inflate", "center"])
def test_axis_table(axis, mode):
    """Entry W[row, col] sits at offset (row-1 on the rows axis, col-1 on the cols axis, any depth)."""
    rows_axis, cols_axis = {"y": ("z", "x"), "z": ("y", "x"), "x": ("y", "z")}[axis]
    w = _distinct_kernel()
    k3 = inflate_kernel(w, mode, axis)
    assert k3.shape == (27, 1, 1)
    for idx, off in enumerate(get_kernel_offsets(3).tolist()):
        row, col, depth = off[AXES[rows_axis]] + 1, off[AXES[cols_axis]] + 1, off[AXES[axis]]
        expected = w[0, 0, row, col].item()
        if mode == "inflate":
            expected /= 3
        if mode == "center" and depth != 0:
            expected = 0.0
        assert k3[idx, 0, 0].item() == pytest.approx(expected), (idx, off)


def test_axis_table_literal_entries():
    """Hand-written spot checks: W[row 0, col 2] ('13') is the offset row -1, col +1."""
    w = _distinct_kernel()
    # depth y: rows -> z, cols -> x
    assert inflate_kernel(w, "center", "y")[kernel_index((1, 0, -1), 3), 0, 0] == 13
    # depth z: rows -> y, cols -> x
    assert inflate_kernel(w, "center", "z")[kernel_index((1, -1, 0), 3), 0, 0] == 13
    # depth x: rows -> y, cols -> z
    assert inflate_kernel(w, "center", "x")[kernel_index((0, -1, 1), 3), 0, 0] == 13


@pytest.mark.parametrize("official,index_of", [
    # the official code's flat 27-index of (row i, col j, depth d) for each transformation name
    ("z-axis", lambda i, j, d: 9 * i + 3 * d + j),
    ("y-axis", lambda i, j, d: 9 * d + 3 * i + j),
    ("x-axis", lambda i, j, d: 9 * j + 3 * i + d),
])
def test_official_layout(official, index_of):
    w = torch.randn(5, 4, 3, 3)
    k3 = inflate_kernel(w, "copy", official)
    for i in range(3):
        for j in range(3):
            for d in range(3):
                torch.testing.assert_close(k3[index_of(i, j, d)], w[:, :, i, j].t())


@pytest.mark.parametrize("k", [3, 7])
def test_constant_field_sums(k):
    """Response to a constant field = sum over offsets: inflate keeps 2D, copy x depth, center = 2D."""
    w = torch.randn(6, 5, k, k)
    sum2d = w.sum(dim=(2, 3)).t()  # [in, out]
    torch.testing.assert_close(inflate_kernel(w, "inflate").sum(0), sum2d)
    torch.testing.assert_close(inflate_kernel(w, "center").sum(0), sum2d)
    torch.testing.assert_close(inflate_kernel(w, "copy").sum(0), k * sum2d)


def test_grouped_layout_and_pointwise():
    w = torch.randn(8, 2, 3, 3)  # groups = 4 over 8 input channels
    k3 = inflate_kernel(w, "center", "y")
    torch.testing.assert_close(k3[13], w[:, :, 1, 1].t())  # centre offset
    p = torch.randn(16, 8, 1, 1)
    assert pointwise_kernel(p).shape == (8, 16)
    torch.testing.assert_close(pointwise_kernel(p), p[:, :, 0, 0].t())
    r = repeat_kernel(p)
    assert r.shape == (8, 8, 16) and all(torch.equal(r[i], p[:, :, 0, 0].t()) for i in range(8))
    with pytest.raises(ValueError, match="square odd"):
        inflate_kernel(torch.randn(2, 2, 2, 2))


@pytest.mark.parametrize("shortcut", ["repeat", "point"])
def test_inflate_state_dict_resnet50(shortcut):
    sd = timm.create_model("resnet50", pretrained=False, num_classes=10).state_dict()
    out = inflate_state_dict(sd, "copy", "z-axis", shortcut)
    assert out["conv1.kernel"].shape == (343, 3, 64)
    assert out["layer1.0.conv1.kernel"].shape == (64, 64)
    assert out["layer1.0.conv2.kernel"].shape == (27, 64, 64)
    ds = (8, 64, 256) if shortcut == "repeat" else (64, 256)
    assert out["layer1.0.downsample.0.kernel"].shape == ds
    assert out["layer4.0.downsample.0.kernel"].shape[-2:] == (1024, 2048)
    assert out["layer2.1.bn2.running_var"] is sd["layer2.1.bn2.running_var"]
    assert out["fc.weight"] is sd["fc.weight"]
    assert not any(k.endswith(".weight") and v.dim() == 4 for k, v in out.items())
    assert len(out) == len(sd)


def test_inflate_state_dict_names_bad_key():
    with pytest.raises(ValueError, match="layer1.0.conv2.weight"):
        inflate_state_dict({"layer1.0.conv2.weight": torch.randn(4, 4, 2, 2)})
