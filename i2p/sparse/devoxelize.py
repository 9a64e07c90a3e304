"""Voxel features → point features (`devoxelize`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .kmap import coord_index
from .ops import scatter_sum
from .tensor import SparseTensor

__all__ = ["devoxelize", "ALIGNS"]

ALIGNS = ("centre", "corner")


class _Gather(torch.autograd.Function):
    """out[p] = Σ_j w[p, j] · feats[rows[p, j]] (rows ≥ 0); a deterministic scatter backward."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, w)
        ctx.n = feats.shape[0]
        ctx.dtype = feats.dtype
        out = torch.zeros(rows.shape[0], feats.shape[1], dtype=w.dtype, device=feats.device)
        for j in range(rows.shape[1]):
            out += w[:, j, None] * feats.index_select(0, rows[:, j]).to(w.dtype)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, w = ctx.saved_tensors
        vals = (w.t()[:, :, None] * grad.to(w.dtype)[None]).reshape(-1, grad.shape[1])  # [J·P, C]
        return scatter_sum(vals, rows.t().reshape(-1), ctx.n).to(ctx.dtype), None, None


def devoxelize(x: SparseTensor, points: torch.Tensor, batch: torch.Tensor | None = None,
               voxel_size: float | Sequence[float] = 1.0, mode: str = "nearest", align: str = "centre"
               ) -> torch.Tensor:
    """Features at points `[P, 3]` (world units) from the voxels of `x` → `[P, C]`.

    Voxel `c` (at tensor stride `ts`) covers `[c, c + ts) · voxel_size`, the grid of
    `sparse_quantize`. `batch [P]` is each point's sample (zeros when omitted); `points` may also
    be `[P, 4]` with the batch index first.
    - `nearest`: the features of the voxel containing the point (zeros if it is not active).
    - `trilinear`: the 8 voxel positions around the point, weighted trilinearly; inactive
      neighbours are dropped and the remaining weights renormalised to sum to 1 (zeros if none).
      `align="centre"` (default) puts a voxel's features at its centre `(c + ts/2)·voxel_size`,
      consistent with the `floor` quantisation: a point at a voxel's centre gets exactly that
      voxel. `align="corner"` puts them at `c·voxel_size`, SPVCNN's `voxel_to_point`
      (torchsparse `calc_ti_weights`): half a voxel towards −x, −y, −z; use it only to reproduce
      SPVCNN results or checkpoints.
    Differentiable in `x.feats` (the weights are constants of the geometry); the backward is a
    deterministic scatter on every device. Weights and sums are float32 for half / bfloat16
    features (autocast); the result has the features' dtype.
    """
    if mode not in ("nearest", "trilinear"):
        raise ValueError(f"mode must be 'nearest' or 'trilinear', got {mode!r}")
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    if points.dim() != 2 or points.shape[1] not in (3, 4):
        raise ValueError(f"points must have shape [P, 3] or [P, 4], got {tuple(points.shape)}")
    if points.shape[1] == 4:
        batch, points = points[:, 0].long(), points[:, 1:]
    elif batch is None:
        batch = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    if batch.shape[0] != points.shape[0]:
        raise ValueError(f"batch has {batch.shape[0]} entries for {points.shape[0]} points")
    ts = torch.tensor(x.stride, dtype=torch.float64, device=points.device)
    vs = torch.as_tensor(voxel_size, dtype=torch.float64, device=points.device).reshape(-1)
    if vs.numel() not in (1, 3) or bool(torch.any(vs <= 0)):
        raise ValueError(f"voxel_size must be positive, got {voxel_size!r}")
    x.cache.coords.setdefault(x.stride, x.coords)
    index = coord_index(x.cache, x.stride)
    u = points.to(torch.float64) / (vs * ts)  # in units of this level's cells
    tsl = torch.tensor(x.stride, dtype=torch.int64, device=points.device)
    feats = x.feats
    wdtype = torch.float32 if feats.dtype in (torch.float16, torch.bfloat16) else feats.dtype
    b = batch[:, None].long()
    if mode == "nearest":
        rows = index.lookup(torch.cat([b, torch.floor(u).to(torch.int64) * tsl], 1))
        w = (rows >= 0).to(wdtype)[:, None]
        return _Gather.apply(feats, rows.clamp(min=0)[:, None], w).to(feats.dtype)
    if align == "centre":
        u = u - 0.5  # centre of cell c is at c + 0.5
    base = torch.floor(u)
    frac = (u - base).to(wdtype)
    base = base.to(torch.int64)
    rows, ws = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                d = torch.tensor([dx, dy, dz], device=points.device)
                r = index.lookup(torch.cat([b, (base + d) * tsl], 1))
                w = torch.prod(torch.where(d.bool(), frac, 1 - frac), 1)
                rows.append(r)
                ws.append(torch.where(r >= 0, w, torch.zeros_like(w)))
    rows_t, w_t = torch.stack(rows, 1), torch.stack(ws, 1)
    w_t = w_t / w_t.sum(1, keepdim=True).clamp(min=torch.finfo(wdtype).tiny)
    return _Gather.apply(feats, rows_t.clamp(min=0), w_t).to(feats.dtype)
