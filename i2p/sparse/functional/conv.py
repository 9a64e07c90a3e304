"""Sparse 3D convolution: gather → GEMM → scatter-add per kernel offset, with its own backward.

The backward of gather→mm→scatter is gather→mm→scatter again (the gradient of the
inputs scatters through the same pairs, the kernel gradient is `gathered_inᵀ · gathered_grad`),
so it lives in one `autograd.Function` and never materialises anything of the grid's size.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from ..kmap import KernelMap, build_kernel_map
from ..tensor import SparseTensor, to_triple

IntOr3 = Union[int, Sequence[int]]


def _gmm(a: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """a [P, Cin] @ w [Cin/g, Cout] with channel groups (block-diagonal weight)."""
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


class _SparseConvFunction(torch.autograd.Function):
    """feats [N_in, Cin], kernel [K, Cin/g, Cout] → [N_out, Cout] through a `KernelMap`."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int):
        ctx.kmap, ctx.groups = kmap, groups
        ctx.save_for_backward(feats, kernel)
        cout = kernel.shape[2]
        feats = feats.contiguous()
        if kmap.identity is not None:
            out = _gmm(feats, kernel[kmap.identity], groups)
        else:
            out = feats.new_zeros(kmap.n_out, cout)
        for k, p in enumerate(kmap.pairs):
            if p is None or k == kmap.identity or p[0].numel() == 0:
                continue
            in_idx, out_idx = p
            out.index_add_(0, out_idx, _gmm(feats.index_select(0, in_idx), kernel[k], groups))
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, kernel = ctx.saved_tensors
        kmap, groups = ctx.kmap, ctx.groups
        grad_out = grad_out.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = feats.new_zeros(feats.shape) if need_x else None
        grad_w = torch.zeros_like(kernel) if need_w else None
        for k, p in enumerate(kmap.pairs):
            if p is None or k == kmap.identity:
                if need_w:
                    grad_w[k] = _gmm_grad_w(feats, grad_out, groups)
                if need_x:
                    grad_x += _gmm_grad_a(grad_out, kernel[k], groups)
                continue
            in_idx, out_idx = p
            if in_idx.numel() == 0:
                continue
            go = grad_out.index_select(0, out_idx)
            if need_w:
                grad_w[k] = _gmm_grad_w(feats.index_select(0, in_idx), go, groups)
            if need_x:
                grad_x.index_add_(0, in_idx, _gmm_grad_a(go, kernel[k], groups))
        return grad_x, grad_w, None, None


def sparse_matmul(feats: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap, groups: int = 1) -> torch.Tensor:
    """Apply `kernel [K, Cin/g, Cout]` through `kmap` (differentiable in feats and kernel)."""
    return _SparseConvFunction.apply(feats, kernel, kmap, groups)


def conv3d(x: SparseTensor, kernel: torch.Tensor, bias: torch.Tensor | None = None,
           kernel_size: IntOr3 = 3, stride: IntOr3 = 1, dilation: IntOr3 = 1,
           transposed: bool = False, groups: int = 1) -> SparseTensor:
    """Sparse convolution with torchsparse semantics (see ARCHITECTURE.md).

    `kernel` is `[K, Cin/g, Cout]` (or `[Cin/g, Cout]` for K = 1). Stride 1: outputs at the
    input coordinates. Stride s: outputs at the unique `floor(c / (s·ts))·(s·ts)`, output `o`
    gathering input `o + offset`. Transposed with stride s: outputs at the finer coordinates
    recorded by the matching strided conv, through that conv's map with in/out swapped.
    """
    ks = to_triple(kernel_size, "kernel_size")
    st = to_triple(stride, "stride")
    dl = to_triple(dilation, "dilation")
    kvol = ks[0] * ks[1] * ks[2]
    w = kernel if kernel.dim() == 3 else kernel.unsqueeze(0)
    if w.shape[0] != kvol:
        raise ValueError(f"kernel has {w.shape[0]} offsets but kernel_size {ks} needs {kvol}")
    if w.shape[1] * groups != x.feats.shape[1]:
        raise ValueError(f"kernel expects {w.shape[1] * groups} input channels, x has {x.feats.shape[1]}")
    cache = x.cache
    cache.coords.setdefault(x.stride, x.coords)
    if not transposed:
        kmap, out_coords, out_stride = build_kernel_map(cache, x.stride, ks, st, dl)
    else:
        if any(x.stride[i] % st[i] for i in range(3)):
            raise ValueError(f"transposed conv stride {st} does not divide tensor stride {x.stride}")
        fine = tuple(x.stride[i] // st[i] for i in range(3))
        if fine not in cache.coords:
            raise ValueError(f"no coordinates cached at stride {fine}: a transposed conv needs the "
                             "matching strided conv (or pooling) earlier on the same batch")
        down, _, _ = build_kernel_map(cache, fine, ks, st, dl)
        kmap, out_coords, out_stride = down.transposed(), cache.coords[fine], fine
    out = sparse_matmul(x.feats, w, kmap, groups)
    if bias is not None:
        out = out + bias
    return SparseTensor._derive(out, out_coords, out_stride, cache)
