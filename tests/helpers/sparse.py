"""Shared helpers for the sparse-engine tests: random sparse grids and dense references."""
from __future__ import annotations

import torch

from i2p.sparse import SparseTensor, get_kernel_offsets


def random_sparse(batch: int = 2, size: int = 6, channels: int = 3, density: float = 0.35,
                  dtype: torch.dtype = torch.float64, seed: int = 0, stride: int = 1) -> SparseTensor:
    """Random active sites on a `size`³ grid per sample (coordinates multiples of `stride`)."""
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b in range(batch):
        mask = torch.rand(size, size, size, generator=g) < density
        mask[0, 0, 0] = True
        xyz = torch.nonzero(mask)
        coords.append(torch.cat([torch.full((xyz.shape[0], 1), b), xyz * stride], 1))
    c = torch.cat(coords).int()
    c = c[torch.randperm(c.shape[0], generator=g)]  # order must not matter
    f = torch.randn(c.shape[0], channels, generator=g, dtype=dtype)
    return SparseTensor(f, c, stride)


def dense_grid(x: SparseTensor, size: int) -> torch.Tensor:
    """[B, C, size, size, size] zero-filled grid in units of x's stride, origin 0."""
    out = torch.zeros(x.batch_size, x.feats.shape[1], size, size, size, dtype=x.feats.dtype)
    c = x.coords.long()
    s = torch.tensor(x.stride)
    cell = c[:, 1:] // s
    out[c[:, 0], :, cell[:, 0], cell[:, 1], cell[:, 2]] = x.feats
    return out


def dense_weight(kernel: torch.Tensor, k: int, dilation: int = 1) -> torch.Tensor:
    """Sparse kernel [K, Cin/g, Cout] → dense [Cout, Cin/g, k, k, k] via the offsets (index off/d + p)."""
    w = kernel if kernel.dim() == 3 else kernel[None]
    offs = get_kernel_offsets((k,) * 3, (1, 1, 1), (1, 1, 1))
    p = (k - 1) // 2
    out = torch.zeros(w.shape[2], w.shape[1], k, k, k, dtype=w.dtype)
    for i, o in enumerate(offs.tolist()):
        out[:, :, o[0] + p, o[1] + p, o[2] + p] = w[i].t()
    return out


def sample(dense: torch.Tensor, coords: torch.Tensor, stride=(1, 1, 1)) -> torch.Tensor:
    """Rows [N, C] of a dense [B, C, X, Y, Z] grid at coords [N, 4] (cells coords / stride)."""
    c = coords.long()
    s = torch.tensor(stride)
    cell = c[:, 1:] // s
    return dense[c[:, 0], :, cell[:, 0], cell[:, 1], cell[:, 2]]
