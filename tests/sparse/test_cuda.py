"""The engine on CUDA, skipped without a GPU (benchmarks/gpu_check.sh runs these on a CUDA machine).

The batched path against the CPU oracle, determinism, no host syncs, few kernels, mixed precision,
and every installed backend against i2p.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from i2p.sparse import BatchNorm, Conv3d, MaxPool3d, ReLU, SparseTensor, backend_available, set_backend
from models.backbones.resnet import SparseResNet
from tests.helpers.sparse import random_sparse

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

LAYERS = [(3, 1, False), (1, 1, False), (2, 2, False), (3, 2, False), (5, 1, False), (2, 2, True), (3, 2, True)]


def _run(net: nn.Module, x: SparseTensor, device: str, backend: str | None = "i2p", amp: torch.dtype | None = None):
    net = net.to(device)
    set_backend(net, backend)
    net.zero_grad(set_to_none=True)
    f = x.feats.to(device).clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None and device == "cuda"):
        y = net(SparseTensor(f, x.coords.to(device)))
    out = y.feats if isinstance(y, SparseTensor) else y
    (out.float() * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
    return [out.detach().float().cpu(), f.grad.cpu()] + [p.grad.cpu() for p in net.parameters()]


def _net(k, s, transposed, c=8):
    layers = [Conv3d(c, c, k, stride=s)] if transposed else []
    layers.append(Conv3d(c, c, k, stride=s, transposed=transposed, bias=True))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("k,s,transposed", LAYERS)
def test_batched_cuda_matches_cpu_loop(k, s, transposed):
    x = random_sparse(batch=2, size=8, channels=8, seed=k + s)
    net = _net(k, s, transposed).double()
    for a, b in zip(_run(net, x, "cuda"), _run(net, x, "cpu")):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_deterministic_run_to_run_and_under_the_torch_flag():
    """Bit-identical twice without the flag (no atomics in the convs) and with it (nothing raises)."""
    x = random_sparse(batch=4, size=12, channels=8, dtype=torch.float32, seed=3, density=0.5)
    torch.manual_seed(0)
    net = nn.Sequential(Conv3d(8, 16, 3), BatchNorm(16), ReLU(), Conv3d(16, 16, 3, stride=2), MaxPool3d(3, 1),
                        Conv3d(16, 8, 3, stride=2, transposed=True))
    a, b = _run(net, x, "cuda"), _run(net, x, "cuda")
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    if not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        pytest.skip("set CUBLAS_WORKSPACE_CONFIG=:4096:8 for torch.use_deterministic_algorithms on CUDA")
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        c, d = _run(net, x, "cuda"), _run(net, x, "cuda")
    finally:
        torch.use_deterministic_algorithms(prev)
    for u, v in zip(c, d):
        assert torch.equal(u, v)


def test_cached_conv_never_syncs_and_launches_few_kernels():
    x = random_sparse(batch=4, size=16, channels=32, dtype=torch.float32, seed=1, density=0.4)
    xc = SparseTensor(x.feats.cuda(), x.coords.cuda())
    conv = Conv3d(32, 32, 3).cuda()
    conv(xc).feats.sum().backward()  # builds and caches the map and its plan
    f = xc.feats.clone().requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = conv(xc.replace(f))
        y.feats.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        conv(xc.replace(f)).feats.backward(torch.ones_like(y.feats))
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    print(f"CUDA kernels per cached conv, forward + backward: {len(kernels)}")
    assert len(kernels) <= 60


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_autocast_training_step_on_cuda(amp):
    torch.manual_seed(0)
    model = SparseResNet("basic", (1, 1, 1, 1), num_classes=4, channels=(16, 16, 32, 32)).cuda().train()
    x = random_sparse(batch=16, size=12, channels=3, dtype=torch.float32, seed=2, density=0.4)
    xc = SparseTensor(x.feats.cuda(), x.coords.cuda())
    labels = (torch.arange(16) % 4).cuda()
    grads = []
    for dt in (None, amp):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dt or torch.float32, enabled=dt is not None):
            loss = F.cross_entropy(model(xc).float(), labels)
        loss.backward()
        assert torch.isfinite(loss)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.isfinite(grads[1]).all()
    assert F.cosine_similarity(grads[0], grads[1], 0) > 0.95


@pytest.mark.parametrize("lib", ["spconv", "torchsparse"])
@pytest.mark.parametrize("k,s,transposed", LAYERS)
def test_backend_on_cuda_matches_i2p(lib, k, s, transposed):
    if not backend_available(lib):
        pytest.skip(f"{lib} is not installed")
    x = random_sparse(batch=2, size=8, channels=8, dtype=torch.float32, seed=k + 2 * s)
    net = _net(k, s, transposed)
    for a, b in zip(_run(net, x, "cuda", lib), _run(net, x, "cuda", "i2p")):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lib", ["spconv", "torchsparse"])
def test_whole_resnet_backend_on_cuda_matches_i2p(lib):
    if not backend_available(lib):
        pytest.skip(f"{lib} is not installed")
    torch.manual_seed(0)
    model = SparseResNet("basic", (1, 1, 1, 1), num_classes=4, channels=(8, 8, 16, 16)).train()
    x = random_sparse(batch=3, size=10, channels=3, dtype=torch.float32, seed=5, density=0.4)
    for a, b in zip(_run(model, x, "cuda", lib), _run(model, x, "cuda", "i2p")):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
