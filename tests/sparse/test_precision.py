"""Mixed precision (CPU bfloat16 autocast: what Lightning's `bf16-mixed` runs) and determinism."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from i2p.collapse import CollapseStats
from i2p.sparse import (
    BatchNorm,
    Conv3d,
    MaxPool3d,
    ReLU,
    SparseTensor,
    add,
    cat,
    devoxelize,
    global_avg_pool,
    global_max_pool,
    native,
)
from i2p.sparse.backends import i2p_backend
from i2p.sparse.backends.i2p_backend import force_impl
from models.backbones.resnet import SparseResNet
from tests.helpers.sparse import random_sparse

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _batch(seed=0, batch=4, channels=3):
    x = random_sparse(batch=batch, size=10, channels=channels, dtype=torch.float32, seed=seed, density=0.4)
    labels = torch.arange(batch) % 4
    return x, labels


def _step(model, x, labels, autocast: bool):
    """One SGD training step; returns (loss, {name: grad}) before the update and the updated params."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(set_to_none=True)
    with torch.autocast(**BF16, enabled=autocast):
        logits = model(x)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    return loss.detach(), grads, logits.dtype


@pytest.mark.parametrize("half", [False, True], ids=["cpu-policy", "bf16-compute"])
@pytest.mark.parametrize("block,layers", [("basic", (1, 1, 1, 1)), ("bottleneck", (1, 1, 1, 1))])
def test_bf16_autocast_training_step_matches_fp32(block, layers, half, monkeypatch):
    """Forward, backward and an optimizer step of a whole SparseResNet under bf16 autocast.

    No dtype error anywhere (submanifold, 1x1, strided and shortcut convs, BN, residual adds, pooling, head),
    finite, and close to the float32 step. "Close" is judged against this tiny net's own
    sensitivity: rounding only its *input* to bf16 already moves the fp32 gradients by ~10 %, so the
    whole gradient must point the same way (cosine > 0.95) and each tensor stay within 50 %.
    Both the CPU policy (convs in float32, the rest in bf16) and convs computing in bf16 (CUDA's).
    """
    from i2p.sparse.backends import i2p_backend
    monkeypatch.setattr(i2p_backend, "CPU_AUTOCAST_COMPUTE", None if half else "auto")
    torch.manual_seed(0)
    ref = SparseResNet(block, layers, num_classes=4, channels=(8, 8, 16, 16)).train()
    torch.manual_seed(0)
    amp = SparseResNet(block, layers, num_classes=4, channels=(8, 8, 16, 16)).train()
    amp.load_state_dict(ref.state_dict())
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    x, labels = _batch(batch=16)
    loss32, g32, _ = _step(ref, x, labels, autocast=False)
    loss16, g16, dt = _step(amp, x, labels, autocast=True)
    assert dt == torch.bfloat16  # the head ran in bf16: autocast was really on
    assert torch.isfinite(loss16) and all(torch.isfinite(g).all() for g in g16.values())
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=2e-2)
    a = torch.cat([g.flatten() for g in g32.values()])
    b = torch.cat([g16[n].flatten() for n in g32])
    assert F.cosine_similarity(a, b, 0) > 0.95
    for n in g32:
        assert g16[n].dtype == torch.float32, n  # master weights stay float32
        if g32[n].norm() > 1e-3:
            assert (g16[n] - g32[n]).norm() / g32[n].norm() < 0.5, n
    for (n, p), q in zip(amp.named_parameters(), ref.parameters()):  # the optimizer step: same move
        assert torch.isfinite(p).all(), n
        d16, d32 = (p - init[n]).detach(), (q - init[n]).detach()
        if d32.norm() > 1e-4:
            assert F.cosine_similarity(d16.flatten(), d32.flatten(), 0) > 0.8, n


@pytest.fixture
def half_on_cpu(monkeypatch):
    """Compute in bf16 on CPU too: the half-precision arithmetic CUDA runs, checked on CPU tensors.

    (The engine computes in float32 under CPU autocast, in the autocast dtype on CUDA.)
    """
    from i2p.sparse.backends import i2p_backend
    monkeypatch.setattr(i2p_backend, "CPU_AUTOCAST_COMPUTE", None)


@pytest.mark.parametrize("impl", ["loop", "batched"])
@pytest.mark.parametrize("k,s", [(1, 1), (3, 1), (2, 2), (3, 2), (1, 2)])
def test_autocast_conv_dtypes_and_accuracy(impl, k, s, half_on_cpu):
    """Each conv under autocast computing in bf16: bf16 out, float32 grads, close to float32.

    Both implementations that run half precision; the native kernels are float32 only.
    """
    x = random_sparse(batch=2, size=8, channels=16, dtype=torch.float32, seed=k + s)
    conv = Conv3d(16, 16, k, stride=s, bias=True)
    outs = []
    for on in (False, True):
        conv.zero_grad(set_to_none=True)
        f = x.feats.clone().requires_grad_(True)
        with force_impl(impl), torch.autocast(**BF16, enabled=on):
            y = conv(x.replace(f))
        assert y.dtype == (torch.bfloat16 if on else torch.float32)
        y.feats.float().square().sum().backward()
        assert f.grad.dtype == torch.float32 and conv.kernel.grad.dtype == torch.float32
        outs.append((y.feats.float().detach(), f.grad, conv.kernel.grad.clone()))
    for a, b in zip(*outs):
        assert ((a - b).norm() / b.norm()) < 2e-2


@pytest.mark.parametrize("bf16_cpu", [True, False], ids=["bf16-cpu", "no-bf16"])
def test_cpu_autocast_compute_dtype_policy(bf16_cpu, monkeypatch):
    """bf16 autocast on CPU: float32 where the compiled float32 kernels run the layer, bfloat16 for the others
    on a CPU with native bf16 arithmetic, float32 otherwise (and for fp16); CUDA: the autocast dtype.
    """
    monkeypatch.setattr(i2p_backend, "cpu_has_bf16", lambda: bf16_cpu)
    cd, cpu, cuda = i2p_backend.compute_dtype, torch.device("cpu"), torch.device("cuda")
    narrow, wide = torch.empty(27, 64, 128), torch.empty(27, 128, 256)
    other = torch.bfloat16 if bf16_cpu else torch.float32
    assert cd(torch.bfloat16, cpu, wide) == other
    assert cd(torch.bfloat16, cpu, narrow) == (torch.float32 if native.lib() is not None else other)
    assert cd(torch.bfloat16, cpu, narrow, groups=2) == other  # grouped convs never run the compiled kernels
    assert cd(torch.float16, cpu, wide) == torch.float32
    assert cd(torch.bfloat16, cuda, narrow) == torch.bfloat16 and cd(torch.float16, cuda, wide) == torch.float16
    monkeypatch.setattr(i2p_backend, "CPU_AUTOCAST_COMPUTE", None)  # the autocast dtype, as on CUDA
    assert cd(torch.bfloat16, cpu, narrow) == torch.bfloat16
    monkeypatch.setattr(i2p_backend, "CPU_AUTOCAST_COMPUTE", torch.float32)
    assert cd(torch.bfloat16, cpu, wide) == torch.float32


def test_an_avx2_cap_counts_as_a_cpu_without_bf16():
    import os
    import subprocess
    import sys

    code = "from i2p.sparse.backends.i2p_backend import cpu_has_bf16; print(cpu_has_bf16())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_wide_convs_compute_in_bf16_on_a_bf16_cpu(monkeypatch):
    """What the policy picks is what runs: the wide conv gets bf16 operands, the narrow one float32; bf16 out,
    float32 gradients, close to the float32 step.
    """
    monkeypatch.setattr(i2p_backend, "cpu_has_bf16", lambda: True)
    seen = []
    real = i2p_backend.i2p_matmul
    monkeypatch.setattr(i2p_backend, "i2p_matmul", lambda f, k, m, g=1: seen.append(f.dtype) or real(f, k, m, g))
    x = random_sparse(batch=2, size=8, channels=16, dtype=torch.float32, seed=3)
    net = nn.Sequential(Conv3d(16, 64, 3), Conv3d(64, 160, 3))  # narrow (<= 128 channels), then wide
    outs = []
    for on in (False, True):
        net.zero_grad(set_to_none=True)
        seen.clear()
        f = x.feats.clone().requires_grad_(True)
        with torch.autocast(**BF16, enabled=on):
            y = net(x.replace(f))
        assert y.dtype == (torch.bfloat16 if on else torch.float32)
        y.feats.float().square().sum().backward()
        assert f.grad.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for p in net.parameters())
        outs.append((y.feats.float().detach(), f.grad, net[0].kernel.grad.clone(), net[1].kernel.grad.clone()))
        narrow = torch.float32 if native.lib() is not None else torch.bfloat16
        assert seen == ([torch.float32] * 2 if not on else [narrow, torch.bfloat16])
    for a, b in zip(*outs):
        assert ((a - b).norm() / b.norm()) < 2e-2


def test_other_ops_under_autocast():
    """BN (float32 statistics, input dtype out), pooling, add / cat (promotion), devoxelize."""
    x = random_sparse(batch=2, size=8, channels=8, dtype=torch.float32, seed=1, density=0.5)
    net = nn.Sequential(Conv3d(8, 8, 3), BatchNorm(8), ReLU(), MaxPool3d(3, 2))
    with torch.autocast(**BF16):
        h = Conv3d(8, 8, 3)(x)
        y = net(x)
        assert h.dtype == y.dtype == torch.bfloat16
        assert add(h, h).dtype == torch.bfloat16 and add(h, x).dtype == torch.float32
        assert cat([h, x]).dtype == torch.float32 and cat([h, x]).feats.shape[1] == 16
        assert global_avg_pool(y).dtype == torch.float32  # summed in float32
        assert global_max_pool(y).dtype == torch.bfloat16
        pts = torch.rand(50, 3) * 8
        for mode in ("nearest", "trilinear"):
            d = devoxelize(h, pts, torch.randint(0, 2, (50,)), 1.0, mode)
            assert d.dtype == torch.bfloat16 and torch.isfinite(d.float()).all()
    (global_avg_pool(y).sum() + d.float().sum()).backward()


def test_global_avg_pool_sums_bf16_in_float32():
    f = torch.full((4096, 2), 1.001).bfloat16()
    x = SparseTensor(f, torch.stack([torch.zeros(4096), torch.arange(4096), torch.zeros(4096), torch.zeros(4096)],
                                    1).int())
    torch.testing.assert_close(global_avg_pool(x), f.float().mean(0, keepdim=True))


def test_collapse_statistics_from_bf16_features():
    """Penultimate features under autocast feed the neural-collapse statistics (float64 inside)."""
    model = SparseResNet("basic", (1, 1, 1, 1), num_classes=4, channels=(8, 8, 16, 16)).eval()
    stats = CollapseStats(num_classes=4)
    with torch.no_grad(), torch.autocast(**BF16):
        for seed in range(3):
            x, labels = _batch(seed, batch=8)
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model.forward_head(model.forward_features(x))
            stats.update(feats, labels, logits.argmax(1))
    out = stats.compute()
    assert out["num_samples"] == 24 and all(v == v for k, v in out.items() if k in ("nc1", "tr_sw", "tr_sb"))


@pytest.mark.parametrize("impl", ["native", "loop", "batched"])
def test_deterministic_under_torch_flag(impl):
    """use_deterministic_algorithms(True): nothing raises, and two training steps are bit-identical."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            torch.manual_seed(0)
            model = nn.Sequential(Conv3d(3, 16, 3), BatchNorm(16), ReLU(), Conv3d(16, 16, 3, stride=2),
                                  MaxPool3d(3, 1), Conv3d(16, 16, 3, stride=2, transposed=True), Conv3d(16, 4, 1))
            x, _ = _batch(3)
            f = x.feats.clone().requires_grad_(True)
            with force_impl(impl):
                y = model(x.replace(f))
                pts = torch.rand(64, 3, generator=torch.Generator().manual_seed(1)) * 10
                d = devoxelize(y, pts, torch.arange(64) % 4, 1.0, "trilinear")
                loss = y.feats.square().sum() + d.square().sum() + global_avg_pool(y).square().sum()
                loss.backward()
            runs.append([loss.detach(), f.grad] + [p.grad.clone() for p in model.parameters()])
        for a, b in zip(*runs):
            assert torch.equal(a, b)
    finally:
        torch.use_deterministic_algorithms(prev)
