"""The i2p backend's three implementations agree; the batched one launches few ops and never syncs.

The batched path is the CUDA default; run here on CPU tensors, it is the same code path.
"""
import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from i2p.sparse import Conv3d, SparseTensor, native
from i2p.sparse.backends.i2p_backend import force_impl
from tests.helpers.sparse import random_sparse

LAYERS = [(3, 1, 1, False, 1), (1, 1, 1, False, 1), (2, 2, 1, False, 1), (3, 2, 1, False, 1), (1, 2, 1, False, 1),
          (5, 1, 1, False, 1), (3, 1, 2, False, 1), (4, 1, 1, False, 1), (2, 2, 1, True, 1), (3, 2, 1, True, 1),
          (3, 1, 1, False, 2)]


def _grads(net: nn.Module, x: SparseTensor, impl: str):
    with force_impl(impl):
        net.zero_grad(set_to_none=True)
        f = x.feats.clone().requires_grad_(True)
        y = net(x.replace(f))
        (y.feats * torch.linspace(-1, 1, y.feats.numel(), dtype=y.dtype).view_as(y.feats)).sum().backward()
    return [y.feats.detach(), f.grad] + [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("k,s,d,transposed,groups", LAYERS)
def test_batched_equals_loop(k, s, d, transposed, groups):
    x = random_sparse(batch=2, size=7, channels=4, seed=k + 3 * s + d)
    layers = [Conv3d(4, 4, k, stride=s)] if transposed else []
    layers.append(Conv3d(4, 6, k, stride=s, dilation=d, transposed=transposed, groups=groups))
    net = nn.Sequential(*layers).double()
    for a, b in zip(_grads(net, x, "batched"), _grads(net, x, "loop")):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_three_impls_agree_in_float32():
    x = random_sparse(batch=2, size=9, channels=16, dtype=torch.float32, seed=4, density=0.5)
    net = nn.Sequential(Conv3d(16, 16, 3), Conv3d(16, 8, 3, stride=2), Conv3d(8, 16, 3, stride=2, transposed=True))
    ref = _grads(net, x, "loop")
    for impl in ("batched", "native"):
        for a, b in zip(_grads(net, x, impl), ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_batched_plan_covers_every_pair_once():
    x = random_sparse(batch=2, size=8, channels=2, seed=6)
    Conv3d(2, 2, 3).double()(x)
    kmap = next(iter(x.cache.kmaps.values()))
    plan = kmap.batched_plan(torch.device("cpu"))
    real = sum(e[1].numel() for e in kmap.offset_pairs())
    assert plan.out_perm.numel() == real == plan.in_perm.numel() == int(plan.out_lengths.sum())
    assert len(set(plan.out_perm.tolist())) == real
    pad = torch.ones(plan.rows, dtype=torch.bool)
    pad[plan.out_perm] = False
    assert bool((plan.gather_out[pad] == kmap.n_out).all())  # padding reads the zero row
    assert sum(kb * m for _, kb, m, _ in plan.buckets) == plan.rows <= 1.5 * real
    assert kmap.batched_plan(torch.device("cpu")) is plan  # built once


def _ops_of_cached_conv(impl: str):
    x = random_sparse(batch=2, size=10, channels=8, dtype=torch.float32, seed=2, density=0.5)
    conv = Conv3d(8, 8, 3)
    with force_impl(impl):
        conv(x).feats.sum().backward()  # builds and caches the kernel map (and the plan)
        f = x.feats.clone().requires_grad_(True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            conv(x.replace(f)).feats.sum().backward()
    return [e.name for e in prof.events()]


def test_batched_conv_launches_few_ops_and_never_syncs():
    """Counted on CPU (the profiler sees aten ops; on CUDA each is about one kernel)."""
    def count(names):
        return sum(1 for n in names if n.startswith("aten::") and n not in _VIEWS)
    batched, loop = _ops_of_cached_conv("batched"), _ops_of_cached_conv("loop")
    for bad in ("aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::bincount"):
        assert bad not in batched, f"{bad}: a host sync inside a cached conv"
    assert count(batched) < count(loop) / 3, (count(batched), count(loop))
    assert count(batched) <= 60


_VIEWS = {"aten::view", "aten::slice", "aten::select", "aten::as_strided", "aten::transpose", "aten::t",
          "aten::empty", "aten::empty_strided", "aten::detach", "aten::alias", "aten::unsqueeze", "aten::expand",
          "aten::resize_", "aten::lift_fresh", "aten::contiguous", "aten::to", "aten::_to_copy", "aten::reshape",
          "aten::_reshape_alias", "aten::permute", "aten::narrow", "aten::result_type", "aten::is_nonzero"}


@pytest.mark.skipif(native.lib() is None, reason=f"no compiled kernels here: {native.status()}")
def test_native_conv_is_one_call_per_direction():
    names = _ops_of_cached_conv("native")
    for bad in ("aten::_local_scalar_dense", "aten::nonzero", "aten::index_add_"):
        assert bad not in names


@pytest.mark.parametrize("isa", ["avx512", "avx2", "neon", "generic", None])
def test_dispatch_by_device_width_and_groups(isa, monkeypatch):
    from i2p.sparse.backends import i2p_backend
    from i2p.sparse.backends.i2p_backend import NATIVE_MAX_CHANNELS, choose_impl
    real = native.lib()
    if isa is not None and real is None:
        pytest.skip(f"no compiled kernels here ({native.status()})")
    lib = None if isa is None else native.NativeLib(real.cdll, isa, real.path)  # the dispatch reads only .isa
    monkeypatch.setattr(i2p_backend.native, "lib", lambda isa=None: lib)
    f = torch.zeros(4, 64)
    have = lib is not None
    assert choose_impl(f, torch.zeros(27, 64, 64), 1) == ("native" if have else "loop")
    wide = NATIVE_MAX_CHANNELS * 2
    wide_native = have and isa == "avx512"  # AVX-512: the kernels win at every width; else MKL does
    assert choose_impl(torch.zeros(4, wide), torch.zeros(27, wide, wide), 1) == ("native" if wide_native else "loop")
    assert choose_impl(f, torch.zeros(27, 32, 64), 2) == "loop"
    assert choose_impl(f.double(), torch.zeros(27, 64, 64, dtype=torch.float64), 1) == "loop"
    with force_impl("native"):  # forced: native wherever it applies at all
        assert choose_impl(torch.zeros(4, wide), torch.zeros(27, wide, wide), 1) == ("native" if have else "loop")
