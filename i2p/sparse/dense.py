"""`to_dense`: a SparseTensor as a dense `[B, C, X, Y, Z]` grid (tests, visualisation)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .tensor import SparseTensor


def to_dense(x: SparseTensor, spatial_shape: Sequence[int] | None = None,
             origin: Sequence[int] | None = None) -> torch.Tensor:
    """Scatter features into `[B, C, X, Y, Z]`, cell `(c - origin) / stride`; empty cells are 0.

    Default origin: `(0, 0, 0)` when `spatial_shape` is given, else the minimum coordinate; the
    default shape just covers the coordinates. Differentiable in `x.feats`.
    """
    c = x.coords.to(torch.int64)
    st = torch.tensor(x.stride, dtype=torch.int64, device=c.device)
    if origin is None:
        org = (torch.zeros(3, dtype=torch.int64, device=c.device) if spatial_shape is not None
               else c[:, 1:].min(0).values)
    else:
        org = torch.as_tensor(origin, dtype=torch.int64, device=c.device).reshape(3)
    cell = torch.div(c[:, 1:] - org, st, rounding_mode="floor")
    if spatial_shape is None:
        shape = (cell.max(0).values + 1).tolist()
    else:
        shape = [int(s) for s in spatial_shape]
        if len(shape) != 3:
            raise ValueError(f"spatial_shape must have 3 entries, got {spatial_shape!r}")
    if bool(torch.any(cell < 0)) or any(bool(torch.any(cell[:, a] >= shape[a])) for a in range(3)):
        raise ValueError(f"coords fall outside spatial_shape {shape} at origin {org.tolist()}")
    out = x.feats.new_zeros((x.batch_size, *shape, x.feats.shape[1]))
    out = out.index_put((c[:, 0], cell[:, 0], cell[:, 1], cell[:, 2]), x.feats)
    return out.permute(0, 4, 1, 2, 3).contiguous()
