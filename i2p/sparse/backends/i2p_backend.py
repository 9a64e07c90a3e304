"""The i2p backend: the engine's own gather → GEMM → scatter-add over a kernel map, with its own backward.

The backward of gather→mm→scatter is gather→mm→scatter again (the gradient of the inputs
scatters through the same pairs, the kernel gradient is `gathered_inᵀ · gathered_grad`), so it
lives in one `autograd.Function` and never materialises anything of the grid's size.

Three implementations of the same arithmetic (chosen per call by `choose_impl`; every one is
checked against the others in the tests):
- `native` (CPU, float32, groups 1; up to 128 channels, every width with the AVX-512 variant): the
  compiled kernels of `i2p.sparse.native` — one C call per conv over all offsets, gathered rows
  and products in registers;
- `loop` (any device, dtype, groups): per offset index_select → mm → index_add_ with reused
  buffers; the tests' oracle and the CPU fallback;
- `batched` (the CUDA default, groups 1, any device): one gather, one batched GEMM per bucket of
  offsets with similar pair counts, one fixed-order `segment_reduce` instead of an atomic
  scatter — a handful of kernels per conv instead of ~80, deterministic, no host sync once the
  kernel map is cached (`KernelMap.batched_plan`).
Per-offset GEMMs beat one big GEMM over a [N, K·Cin] neighbour table because only ~11 of 27
neighbours are active, so the table multiplies zeros 60 % of the time.

Under autocast (`functional.conv.sparse_matmul` casts, then calls this with autocast off) the
compute dtype (`compute_dtype`) is the autocast dtype on CUDA (tensor cores). On CPU it is
float32 for the layers of up to 128 channels the compiled kernels run — on a Xeon with
AVX-512-BF16 a 16k-voxel 64→64 conv forward + backward took 0.13 s with them against 0.4 s in
bfloat16 through oneDNN — and, under bf16 autocast on a CPU that does bfloat16 arithmetic
natively (AVX-512-BF16 or AMX, and ATen running its AVX-512 kernels), bfloat16 for the wider
ones: there oneDNN's bfloat16 GEMM beats both MKL's and the compiled kernels' float32 (2-core
AMD EPYC, Zen 4, ResNet-18 on 32 × 2048 points, a new batch every step: bf16-mixed FIP-IO
0.60–0.62 s a step against 0.90 s in float32, FIP-ALL 1.04–1.07 against 1.68–1.72 s). Elsewhere
float32. Half-precision operands are summed over offsets in float32.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .. import native
from ..kmap import KernelMap

__all__ = ["i2p_matmul", "conv_forward", "conv_backward", "choose_impl", "force_impl", "compute_dtype",
           "cpu_has_bf16", "IMPLS", "CPU_AUTOCAST_COMPUTE", "BF16_CPU_FLAGS", "NATIVE_MAX_CHANNELS",
           "WIDE_NATIVE_ISAS"]

IMPLS = ("native", "loop", "batched")
#: compute dtype of the i2p backend under CPU autocast: "auto" (`compute_dtype`), a dtype, or None (the
#: autocast dtype itself, as on CUDA)
CPU_AUTOCAST_COMPUTE: torch.dtype | str | None = "auto"
#: x86 flags of CPUs that do bfloat16 arithmetic natively (AMD Zen 4+, Intel Cooper Lake; AMX: Sapphire Rapids+)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
_forced: list[str] = []


@contextlib.contextmanager
def force_impl(impl: str) -> Iterator[None]:
    """Run the i2p backend's `impl` wherever it applies (tests and benchmarks compare them)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    _forced.append(impl)
    try:
        yield
    finally:
        _forced.pop()


# the compiled kernels keep each offset's weights in registers and L1 for a few rows at a time: up
# to 128 channels they beat the per-offset MKL GEMMs of `loop` (AVX2, 1 thread, fwd + bwd: 64 ch 35 vs
# 40 ms). Wider, MKL's cache-blocked GEMM wins with the AVX2 variant (512 ch / 1.3k voxels 630 vs 425 ms;
# ResNet-18 step on a Zen 4, kernels for every width vs up to 128: FIP-IO 1.38 vs 1.29 s, FIP-ALL 2.14
# vs 1.94 s) but loses to the AVX-512 one, with twice the vector registers (same steps: 0.88 vs 1.20 s,
# 1.34 vs 1.83 s).
NATIVE_MAX_CHANNELS = 128
#: variants whose kernels run every width (the others stop at NATIVE_MAX_CHANNELS)
WIDE_NATIVE_ISAS = ("avx512",)


def choose_impl(feats: torch.Tensor, kernel: torch.Tensor, groups: int) -> str:
    """The implementation for these operands: `native`, `batched` or `loop`.

    `native` on CPU float32 when the compiled kernels load (up to `NATIVE_MAX_CHANNELS`, every width
    with a `WIDE_NATIVE_ISAS` variant), `batched` off the CPU, else `loop`.
    """
    if _forced:
        want = _forced[-1]
        if want == "native" and (groups != 1 or not native.usable(feats, kernel)):
            return "loop"
        if want == "batched" and groups != 1:
            return "loop"
        return want
    if feats.device.type == "cpu":
        fits = _narrow(kernel, groups) or (groups == 1 and _native_isa() in WIDE_NATIVE_ISAS)
        return "native" if fits and native.usable(feats, kernel) else "loop"
    return "batched" if groups == 1 else "loop"


def _narrow(kernel: torch.Tensor, groups: int) -> bool:
    """Within the width where the compiled kernels beat every other way of running a float32 conv."""
    return groups == 1 and max(kernel.shape[-2], kernel.shape[-1]) <= NATIVE_MAX_CHANNELS


def _native_isa() -> str | None:
    lb = native.lib()
    return None if lb is None else lb.isa


@functools.cache
def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic here: one of `BF16_CPU_FLAGS`, with ATen at AVX-512 (so an AVX2 cap,
    `ATEN_CPU_CAPABILITY=avx2`, counts as an AVX2 machine).
    """
    return bool(native.cpu_features() & set(BF16_CPU_FLAGS)) and \
        torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def compute_dtype(autocast: torch.dtype, device: torch.device, kernel: torch.Tensor, groups: int = 1) -> torch.dtype:
    """The dtype a conv computes in under autocast to `autocast` (see the module docstring)."""
    if device.type != "cpu":
        return autocast
    if CPU_AUTOCAST_COMPUTE != "auto":
        return CPU_AUTOCAST_COMPUTE or autocast
    narrow_native = _narrow(kernel, groups) and native.lib() is not None
    if autocast == torch.bfloat16 and not narrow_native and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Offsets are summed in float32 when the compute dtype is half or bfloat16."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# ---------------------------------------------------------------------------------------------
# grouped GEMM helpers


def _gmm(a: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """A [P, Cin] @ w [Cin/g, Cout] with channel groups (block-diagonal weight)."""
    if groups == 1:
        return a.mm(w)
    p = a.shape[0]
    cin_g, cout = w.shape
    ag = a.view(p, groups, cin_g).transpose(0, 1)  # [g, P, cin_g]
    wg = w.view(cin_g, groups, cout // groups).transpose(0, 1)  # [g, cin_g, cout_g]
    return torch.bmm(ag, wg).transpose(0, 1).reshape(p, cout)


def _gmm_grad_a(go: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """Gradient of `_gmm` w.r.t. a: go [P, Cout] → [P, Cin]."""
    if groups == 1:
        return go.mm(w.t())
    p = go.shape[0]
    cin_g, cout = w.shape
    gg = go.view(p, groups, cout // groups).transpose(0, 1)  # [g, P, cout_g]
    wg = w.view(cin_g, groups, cout // groups).permute(1, 2, 0)  # [g, cout_g, cin_g]
    return torch.bmm(gg, wg).transpose(0, 1).reshape(p, groups * cin_g)


def _gmm_grad_w(a: torch.Tensor, go: torch.Tensor, groups: int) -> torch.Tensor:
    """Gradient of `_gmm` w.r.t. w: → [Cin/g, Cout]."""
    if groups == 1:
        return a.t().mm(go)
    p, cin = a.shape
    cout = go.shape[1]
    ag = a.view(p, groups, cin // groups).permute(1, 2, 0)  # [g, cin_g, P]
    gg = go.view(p, groups, cout // groups).transpose(0, 1)  # [g, P, cout_g]
    return torch.bmm(ag, gg).transpose(0, 1).reshape(cin // groups, cout)


def _identity_out(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int) -> torch.Tensor:
    """The accumulator: the centre GEMM of a submanifold map, else zeros (in the accumulation dtype)."""
    acc = _acc_dtype(feats.dtype)
    if kmap.identity is not None:
        return _gmm(feats, kernel[kmap.identity], groups).to(acc)
    return torch.zeros(kmap.n_out, kernel.shape[2], dtype=acc, device=feats.device)


# ---------------------------------------------------------------------------------------------
# forward


def _forward_loop(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int) -> torch.Tensor:
    """One gather and one product buffer reused across offsets (fresh tensors cost page faults)."""
    out = _identity_out(feats, kernel, kmap, groups)
    pairs = kmap.offset_pairs()
    m = kmap.max_pairs()
    if m == 0:
        return out
    gbuf = feats.new_empty(m, feats.shape[1])
    pbuf = feats.new_empty(m, kernel.shape[2]) if groups == 1 else None
    for k, in_idx, out_idx in pairs:
        n = in_idx.numel()
        g = torch.index_select(feats, 0, in_idx, out=gbuf[:n])
        prod = torch.mm(g, kernel[k], out=pbuf[:n]) if groups == 1 else _gmm(g, kernel[k], groups)
        out.index_add_(0, out_idx, prod.to(out.dtype))
    return out


_I32_ROWS = 2 ** 31 - 1


def _forward_native(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int) -> torch.Tensor:
    if max(kmap.n_in, kmap.n_out) >= _I32_ROWS:  # the kernels index rows with int32
        return _forward_loop(feats, kernel, kmap, groups)
    out = _identity_out(feats, kernel, kmap, groups)
    plan = kmap.tiled_pairs(True)
    if plan.n:
        native.conv_forward(native.lib(), feats, kernel, out, plan)
    return out


def _forward_batched(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int) -> torch.Tensor:
    out = _identity_out(feats, kernel, kmap, groups)
    plan = kmap.batched_plan(feats.device)
    if plan.rows == 0:
        return out
    w = kernel.index_select(0, plan.ks)
    g = feats.index_select(0, plan.gather_in)
    prod = feats.new_empty(plan.rows, kernel.shape[2])
    for r0, kb, m, w0 in plan.buckets:
        torch.bmm(g[r0:r0 + kb * m].view(kb, m, -1), w[w0:w0 + kb], out=prod[r0:r0 + kb * m].view(kb, m, -1))
    summed = torch.segment_reduce(prod.index_select(0, plan.out_perm).to(out.dtype), "sum",
                                  lengths=plan.out_lengths, unsafe=True)
    return out.add_(summed)


_FORWARD = {"loop": _forward_loop, "native": _forward_native, "batched": _forward_batched}


def conv_forward(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int = 1,
                 impl: str | None = None) -> torch.Tensor:
    """out[o] = Σ_k feats[i] · kernel[k] over the pairs (i, o) of offset k, in feats' dtype."""
    impl = impl or choose_impl(feats, kernel, groups)
    return _FORWARD[impl](feats, kernel, kmap, groups).to(feats.dtype)


# ---------------------------------------------------------------------------------------------
# backward


def _identity_grads(feats, kernel, grad_out, kmap, groups, need_x, need_w):
    acc = _acc_dtype(feats.dtype)
    grad_w = torch.zeros_like(kernel) if need_w else None
    grad_x = None
    if kmap.identity is not None:
        c = kmap.identity
        if need_w:
            grad_w[c] = _gmm_grad_w(feats, grad_out, groups)
        if need_x:
            grad_x = _gmm_grad_a(grad_out, kernel[c], groups).to(acc)
    if need_x and grad_x is None:
        grad_x = torch.zeros(feats.shape, dtype=acc, device=feats.device)
    return grad_x, grad_w


def _backward_loop(feats, kernel, grad_out, kmap, groups, need_x, need_w):
    grad_x, grad_w = _identity_grads(feats, kernel, grad_out, kmap, groups, need_x, need_w)
    m = kmap.max_pairs()
    if m == 0:
        return grad_x, grad_w
    gobuf = grad_out.new_empty(m, grad_out.shape[1])
    xbuf = feats.new_empty(m, feats.shape[1]) if need_w else None
    pbuf = feats.new_empty(m, feats.shape[1]) if (need_x and groups == 1) else None
    for k, in_idx, out_idx in kmap.offset_pairs():
        n = in_idx.numel()
        go = torch.index_select(grad_out, 0, out_idx, out=gobuf[:n])
        if need_w:
            xg = torch.index_select(feats, 0, in_idx, out=xbuf[:n])
            grad_w[k] = _gmm_grad_w(xg, go, groups)
        if need_x:
            prod = torch.mm(go, kernel[k].t(), out=pbuf[:n]) if groups == 1 else _gmm_grad_a(go, kernel[k], groups)
            grad_x.index_add_(0, in_idx, prod.to(grad_x.dtype))
    return grad_x, grad_w


def _backward_native(feats, kernel, grad_out, kmap, groups, need_x, need_w):
    if max(kmap.n_in, kmap.n_out) >= _I32_ROWS:
        return _backward_loop(feats, kernel, grad_out, kmap, groups, need_x, need_w)
    grad_x, grad_w = _identity_grads(feats, kernel, grad_out, kmap, groups, need_x, need_w)
    plan = kmap.tiled_pairs(False)
    if plan.n:
        kt = kernel.transpose(1, 2).contiguous() if need_x else None
        native.conv_backward(native.lib(), feats, grad_out, kt, grad_x, grad_w, plan)
    return grad_x, grad_w


def _backward_batched(feats, kernel, grad_out, kmap, groups, need_x, need_w):
    grad_x, grad_w = _identity_grads(feats, kernel, grad_out, kmap, groups, need_x, need_w)
    plan = kmap.batched_plan(feats.device)
    if plan.rows == 0:
        return grad_x, grad_w
    w = kernel.index_select(0, plan.ks)
    go = F.pad(grad_out, (0, 0, 0, 1)).index_select(0, plan.gather_out)  # padding rows read the zero row
    if need_x:
        gg = feats.new_empty(plan.rows, feats.shape[1])
        for r0, kb, m, w0 in plan.buckets:
            torch.bmm(go[r0:r0 + kb * m].view(kb, m, -1), w[w0:w0 + kb].transpose(1, 2),
                      out=gg[r0:r0 + kb * m].view(kb, m, -1))
        grad_x.add_(torch.segment_reduce(gg.index_select(0, plan.in_perm).to(grad_x.dtype), "sum",
                                         lengths=plan.in_lengths, unsafe=True))
    if need_w:
        g = feats.index_select(0, plan.gather_in)
        gw = kernel.new_empty(plan.ks.numel(), kernel.shape[1], kernel.shape[2])
        for r0, kb, m, w0 in plan.buckets:
            torch.bmm(g[r0:r0 + kb * m].view(kb, m, -1).transpose(1, 2), go[r0:r0 + kb * m].view(kb, m, -1),
                      out=gw[w0:w0 + kb])
        grad_w.index_copy_(0, plan.ks, gw)
    return grad_x, grad_w


_BACKWARD = {"loop": _backward_loop, "native": _backward_native, "batched": _backward_batched}


def conv_backward(feats: torch.Tensor, kernel: torch.Tensor, grad_out: torch.Tensor, kmap: KernelMap,
                  groups: int, need_x: bool, need_w: bool, impl: str | None = None
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `conv_forward`: scatter→mm→gather run backwards through the same pairs."""
    impl = impl or choose_impl(feats, kernel, groups)
    gx, gw = _BACKWARD[impl](feats, kernel, grad_out, kmap, groups, need_x, need_w)
    return (None if gx is None else gx.to(feats.dtype)), gw


class _SparseConvFunction(torch.autograd.Function):
    """feats [N_in, Cin], kernel [K, Cin/g, Cout] → [N_out, Cout] through a `KernelMap`."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int):
        feats = feats.contiguous()
        kernel = kernel.contiguous()
        ctx.kmap, ctx.groups = kmap, groups
        ctx.impl = choose_impl(feats, kernel, groups)
        ctx.save_for_backward(feats, kernel)
        return conv_forward(feats, kernel, kmap, groups, ctx.impl)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, kernel = ctx.saved_tensors
        grad_x, grad_w = conv_backward(feats, kernel, grad_out.contiguous().to(feats.dtype), ctx.kmap, ctx.groups,
                                       ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.impl)
        return grad_x, grad_w, None, None


def i2p_matmul(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int = 1) -> torch.Tensor:
    """The i2p backend: the differentiable gather-GEMM-scatter (no autocast handling here)."""
    return _SparseConvFunction.apply(feats, kernel, kmap, groups)
