"""Points → voxels (`sparse_quantize`) and samples → one batch (`sparse_collate`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .tensor import SparseTensor

__all__ = ["sparse_quantize", "sparse_collate", "ArrayLike"]

ArrayLike = np.ndarray | torch.Tensor
_I32 = (-(2 ** 31), 2 ** 31 - 1)


def _check_int32(pts: torch.Tensor, vs: torch.Tensor) -> None:
    """ValueError naming the first point whose voxel index is not finite or not an int32."""
    p64 = pts.to(torch.float64) / vs
    bad = ~torch.isfinite(p64).all(1) | ((p64 < _I32[0]) | (p64 >= _I32[1] + 1)).any(1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"point {i} = {pts[i].tolist()} gives voxel index {p64[i].floor().tolist()} at "
                         f"voxel_size {vs.tolist()}: coordinates must be finite and within int32 "
                         f"[{_I32[0]}, {_I32[1]}] (a stray point, or a voxel size in the wrong unit?); "
                         f"{int(bad.sum())} such point(s)")


def sparse_quantize(points: ArrayLike, voxel_size: float | Sequence[float] = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxelize points as torchsparse 2.x: `coords = floor(points / voxel_size)`.

    No shift is applied, so negative coordinates are valid. Returns `(coords int32 [M, 3],
    index [M], inverse [P])`: `index[m]` is one representative point of voxel `m` (the first in
    input order) and `inverse[p]` the voxel of point `p`, so `coords[inverse] ==
    floor(points / voxel_size)`. Voxels come out in lexicographic (x, y, z) order. A point whose
    voxel index is not finite or does not fit int32 raises ValueError naming it (index and value)
    instead of wrapping around.
    """
    pts = torch.as_tensor(points)
    if pts.dim() != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape [P, 3], got {tuple(pts.shape)}")
    if pts.shape[0] == 0:
        raise ValueError("points is empty")
    vs = torch.as_tensor(voxel_size, dtype=torch.float64, device=pts.device).reshape(-1)
    if vs.numel() not in (1, 3) or bool(torch.any(vs <= 0)):
        raise ValueError(f"voxel_size must be a positive float or 3 positive floats, got {voxel_size!r}")
    _check_int32(pts, vs)
    grid = torch.floor(pts.to(torch.float64) / vs).to(torch.int64)
    # 1-D unique on packed keys is much faster than unique(dim=0); same lexicographic order
    lo = grid.min(0).values
    span = (grid.max(0).values - lo + 1).tolist()
    if span[0] * span[1] * span[2] < 2 ** 62:
        q = grid - lo
        keys, inverse = torch.unique((q[:, 0] * span[1] + q[:, 1]) * span[2] + q[:, 2], return_inverse=True)
        z = keys % span[2]
        xy = keys // span[2]
        uniq = torch.stack([xy // span[1], xy % span[1], z], 1) + lo
    else:
        uniq, inverse = torch.unique(grid, dim=0, return_inverse=True)
    # first point of each voxel: minimum point index among those mapping to it
    p = torch.arange(grid.shape[0], device=grid.device)
    index = torch.full((uniq.shape[0],), grid.shape[0], dtype=torch.int64, device=grid.device)
    index = index.scatter_reduce(0, inverse, p, reduce="amin", include_self=True)
    return uniq.to(torch.int32), index, inverse


def sparse_collate(samples: Sequence[tuple[ArrayLike, ArrayLike]]) -> tuple[SparseTensor, torch.Tensor]:
    """Batch `[(coords [Mi, 3] int, feats [Mi, C]), ...]` into one stride-1 `SparseTensor`.

    The batch index goes first in the coordinates (torchsparse 2.x); also returns
    `offsets [B + 1]` so that sample `b` owns rows `offsets[b]:offsets[b + 1]`.
    """
    if len(samples) == 0:
        raise ValueError("samples is empty")
    coords, feats, counts = [], [], [0]
    for b, sample in enumerate(samples):
        if len(sample) != 2:
            raise ValueError(f"samples[{b}] must be a (coords, feats) pair")
        c = torch.as_tensor(sample[0])
        f = torch.as_tensor(sample[1])
        if c.dim() != 2 or c.shape[1] != 3 or c.dtype.is_floating_point or c.dtype == torch.bool:
            raise ValueError(f"samples[{b}] coords must be an integer [M, 3] array, got "
                             f"{tuple(c.shape)} {c.dtype}")
        if f.dim() == 1:
            f = f[:, None]
        if f.shape[0] != c.shape[0]:
            raise ValueError(f"samples[{b}] feats has {f.shape[0]} rows but coords has {c.shape[0]}")
        bcol = torch.full((c.shape[0], 1), b, dtype=torch.int32, device=c.device)
        coords.append(torch.cat([bcol, c.to(torch.int32)], 1))
        feats.append(f)
        counts.append(c.shape[0])
    offsets = torch.cumsum(torch.tensor(counts, dtype=torch.int64), 0)
    ft = torch.cat(feats, 0)
    if not ft.dtype.is_floating_point:
        ft = ft.float()
    return SparseTensor(ft, torch.cat(coords, 0).to(ft.device)), offsets
