"""Backends (`i2p`, `spconv`, `torchsparse`): same modules, same checkpoints, same outputs and gradients.

spconv's CPU path is correct at one thread only; the backend pins it there on CPU (tested below),
and the suite runs at one thread anyway (tests/conftest.py).
"""
import pytest
import torch
from torch import nn

from i2p.sparse import BatchNorm, Conv3d, MaxPool3d, ReLU, SparseTensor, backend_available, set_backend
from i2p.sparse import backends as B
from models.backbones.resnet import SparseResNet
from tests.helpers.sparse import random_sparse

HAVE_SPCONV = backend_available("spconv")
HAVE_TS = backend_available("torchsparse")
needs_spconv = pytest.mark.skipif(not HAVE_SPCONV, reason="spconv is not installed (pip install .[bench])")
needs_ts = pytest.mark.skipif(not HAVE_TS, reason="torchsparse is not installed (not on PyPI: build it from "
                                                  "github.com/mit-han-lab/torchsparse)")
LIBS = [pytest.param("spconv", marks=needs_spconv), pytest.param("torchsparse", marks=needs_ts)]

# (kernel, stride, dilation, transposed): every layer type the models use, and a few more
LAYERS = [(3, 1, 1, False), (1, 1, 1, False), (2, 2, 1, False), (3, 2, 1, False), (1, 2, 1, False),
          (5, 1, 1, False), (3, 1, 2, False), (2, 1, 1, False), (2, 2, 1, True), (3, 2, 1, True)]


@pytest.fixture(autouse=True)
def _default_backend():
    B.set_default_backend(None)
    yield
    B.set_default_backend(None)


def _grads(module: nn.Module, x: SparseTensor, backend: str | None):
    set_backend(module, backend)
    module.zero_grad(set_to_none=True)
    f = x.feats.clone().requires_grad_(True)
    y = module(x.replace(f))
    out = y.feats if isinstance(y, SparseTensor) else y
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    params = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return out.detach(), f.grad, params, (y.coords if isinstance(y, SparseTensor) else None)


def _assert_same(a, b, tol):
    torch.testing.assert_close(a[0], b[0], rtol=tol, atol=tol)
    torch.testing.assert_close(a[1], b[1], rtol=tol, atol=tol)
    assert a[2].keys() == b[2].keys() and a[2]
    for k in a[2]:
        torch.testing.assert_close(a[2][k], b[2][k], rtol=tol, atol=tol, msg=k)
    if a[3] is not None:
        assert torch.equal(a[3], b[3])  # the engine's kernel maps: identical output coordinates


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("k,s,d,transposed", LAYERS)
def test_every_layer_type_matches_i2p(lib, k, s, d, transposed):
    x = random_sparse(batch=2, size=7, channels=6, dtype=torch.float32, seed=k * 10 + s + d)
    layers: list[nn.Module] = []
    if transposed:  # the transposed conv returns to the level a strided conv made
        layers.append(Conv3d(6, 6, k, stride=s))
    layers.append(Conv3d(6, 5, k, stride=s, dilation=d, transposed=transposed, bias=True))
    net = nn.Sequential(*layers)
    _assert_same(_grads(net, x, lib), _grads(net, x, "i2p"), 1e-5)


@needs_spconv
def test_spconv_float64():
    x = random_sparse(batch=2, size=6, channels=3, dtype=torch.float64, seed=2)
    net = nn.Sequential(Conv3d(3, 4, 3), Conv3d(4, 4, 3, stride=2), Conv3d(4, 3, 3, stride=2, transposed=True)).double()
    _assert_same(_grads(net, x, "spconv"), _grads(net, x, "i2p"), 1e-10)


@pytest.mark.parametrize("lib", LIBS)
def test_whole_sparse_resnet_matches_i2p(lib):
    """A whole SparseResNet (stem, 4 stages, strided blocks, shortcuts, head) on each backend."""
    torch.manual_seed(0)
    model = SparseResNet("basic", (1, 1, 1, 1), num_classes=4, channels=(8, 8, 16, 16)).train()
    x = random_sparse(batch=3, size=10, channels=3, dtype=torch.float32, seed=5, density=0.4)
    ref = _grads(model, x, "i2p")
    got = _grads(model, x, lib)
    assert all(m.backend == lib for m in model.modules() if isinstance(m, Conv3d))
    _assert_same(got, ref, 1e-4)


@pytest.mark.parametrize("lib", LIBS)
def test_grouped_conv_is_a_clear_error_and_set_backend_keeps_it_on_i2p(lib):
    x = random_sparse(batch=1, size=5, channels=4, dtype=torch.float32, seed=1)
    with pytest.raises(NotImplementedError, match=f"backend='{lib}' has no grouped convolution"):
        Conv3d(4, 4, 3, groups=2, backend=lib)(x)
    net = nn.Sequential(Conv3d(4, 4, 3, groups=2), Conv3d(4, 4, 3))
    got = _grads(net, x, lib)
    assert net[0].backend == "i2p" and net[1].backend == lib
    _assert_same(got, _grads(net, x, "i2p"), 1e-5)


@needs_spconv
def test_spconv_cpu_is_pinned_to_one_thread():
    """With torch at 2 threads the spconv backend still gives the exact i2p result.

    spconv's CPU scatter races beyond one thread; the backend runs it at one and restores the setting.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = random_sparse(batch=2, size=14, channels=32, dtype=torch.float32, seed=9, density=0.5)
        conv = Conv3d(32, 32, 3)
        _assert_same(_grads(conv, x, "spconv"), _grads(conv, x, "i2p"), 1e-4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)


def test_default_backend_env_and_module_precedence(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert B.get_default_backend() == "auto" and B.resolve_name(None, cpu) == "i2p"
    monkeypatch.setenv("I2P_SPARSE_BACKEND", "i2p")
    assert B.get_default_backend() == "i2p" and B.resolve_name(None, cuda) == "i2p"
    monkeypatch.setenv("I2P_SPARSE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="I2P_SPARSE_BACKEND"):
        B.get_default_backend()
    monkeypatch.delenv("I2P_SPARSE_BACKEND")
    expect_cuda = "spconv" if HAVE_SPCONV else ("torchsparse" if HAVE_TS else "i2p")
    assert B.resolve_name("auto", cuda) == expect_cuda
    assert B.resolve_name("auto", cuda, groups=2) == "i2p"  # neither library has grouped convs
    assert B.resolve_name("auto", cpu) == "i2p"
    B.set_default_backend("i2p")
    assert B.resolve_name(None, cuda) == "i2p" and B.resolve_name("auto", cuda) == expect_cuda  # module wins
    with pytest.raises(ValueError, match="backend must be one of"):
        Conv3d(2, 2, backend="cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        B.set_default_backend("minkowski")


@needs_spconv
def test_engine_default_reaches_modules_without_a_backend(monkeypatch):
    calls = []
    from i2p.sparse.backends import spconv_backend
    real = spconv_backend.spconv_matmul
    monkeypatch.setattr(spconv_backend, "spconv_matmul", lambda *a: calls.append(1) or real(*a))
    x = random_sparse(batch=1, size=5, channels=2, dtype=torch.float32)
    conv = Conv3d(2, 2, 3)
    conv(x)
    assert not calls
    B.set_default_backend("spconv")
    conv(x)
    assert calls
    conv.backend = "i2p"
    conv(x)
    assert len(calls) == 1


@pytest.mark.skipif(HAVE_TS, reason="torchsparse is installed here")
def test_naming_a_missing_library_says_how_to_install_it():
    with pytest.raises(ImportError, match="torchsparse is needed for backend='torchsparse'"):
        B.set_default_backend("torchsparse")
    with pytest.raises(ImportError, match="torchsparse is needed"):
        set_backend(nn.Sequential(Conv3d(2, 2)), "torchsparse")


@pytest.mark.parametrize("lib", LIBS)
def test_library_backends_under_bf16_autocast(lib):
    """Under bf16 autocast the libraries' convs compute in float32 and return bf16.

    Neither library has bfloat16 (torchsparse's CPU ops are float32 only); the i2p engine on CPU
    computes in float32 too.
    """
    x = random_sparse(batch=2, size=7, channels=6, dtype=torch.float32, seed=4)
    net = nn.Sequential(Conv3d(6, 8, 3), BatchNorm(8), ReLU(), Conv3d(8, 4, 2, stride=2))
    outs = []
    for be in (lib, "i2p"):
        set_backend(net, be)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
        assert y.dtype == torch.bfloat16
        y.feats.float().sum().backward()
        outs.append(y.feats.float().detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=2e-2, atol=2e-2)


def test_checkpoints_do_not_depend_on_the_backend():
    """Backend is an attribute, not state: the same keys and shapes, loadable across backends."""
    a = nn.Sequential(Conv3d(3, 4, 3), BatchNorm(4), ReLU(), MaxPool3d(3, 2), Conv3d(4, 2, 1, stride=2))
    b = nn.Sequential(Conv3d(3, 4, 3), BatchNorm(4), ReLU(), MaxPool3d(3, 2), Conv3d(4, 2, 1, stride=2))
    set_backend(b, "spconv" if HAVE_SPCONV else "i2p")
    sa, sb = a.state_dict(), b.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}
    b.load_state_dict(sa)
    assert "backend" not in str(list(sb))
    assert b[0].backend == ("spconv" if HAVE_SPCONV else "i2p")
