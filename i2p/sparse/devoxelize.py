"""Voxel features → point features (`devoxelize`)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .kmap import coord_index
from .tensor import SparseTensor


def devoxelize(x: SparseTensor, points: torch.Tensor, batch: Optional[torch.Tensor] = None,
               voxel_size: Union[float, Sequence[float]] = 1.0, mode: str = "nearest") -> torch.Tensor:
    """Features at points `[P, 3]` (world units) from the voxels of `x` → `[P, C]`.

    Voxel `c` (at tensor stride `ts`) covers `[c, c + ts) · voxel_size`, the grid of
    `sparse_quantize`. `batch [P]` is each point's sample (zeros when omitted); `points` may also
    be `[P, 4]` with the batch index first.
    - `nearest`: the features of the voxel containing the point (zeros if it is not active).
    - `trilinear`: the 8 voxel centres around the point, weighted trilinearly; inactive
      neighbours are dropped and the remaining weights renormalised to sum to 1 (zeros if none).
    Differentiable in `x.feats` (the weights are constants of the geometry).
    """
    if mode not in ("nearest", "trilinear"):
        raise ValueError(f"mode must be 'nearest' or 'trilinear', got {mode!r}")
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
    if mode == "nearest":
        cell = torch.floor(u).to(torch.int64) * tsl
        rows = index.lookup(torch.cat([batch[:, None].long(), cell], 1))
        table = torch.cat([feats, feats.new_zeros(1, feats.shape[1])], 0)
        return table[torch.where(rows >= 0, rows, torch.full_like(rows, feats.shape[0]))]
    u = u - 0.5  # centre of cell c is at c + 0.5
    base = torch.floor(u)
    frac = (u - base).to(feats.dtype)
    base = base.to(torch.int64)
    out = feats.new_zeros(points.shape[0], feats.shape[1])
    wsum = feats.new_zeros(points.shape[0])
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                d = torch.tensor([dx, dy, dz], device=points.device)
                cell = (base + d) * tsl
                rows = index.lookup(torch.cat([batch[:, None].long(), cell], 1))
                w = torch.prod(torch.where(d.bool(), frac, 1 - frac), 1)
                w = torch.where(rows >= 0, w, torch.zeros_like(w))
                safe = rows.clamp(min=0)
                out = out + w[:, None] * feats.index_select(0, safe)
                wsum = wsum + w
    return out / wsum.clamp(min=torch.finfo(feats.dtype).tiny)[:, None]
