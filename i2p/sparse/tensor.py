"""`SparseTensor`: features on integer voxel coordinates, plus a cache shared per input batch.

Coordinates are `(batch, x, y, z)` int32 in voxel units of the input; a tensor at stride `s`
has coordinates that are multiples of `s`. Every tensor derived from the same input batch
(conv outputs, activations, down-/up-sampled levels) shares one `SparseCache`, so kernel maps
are built once per level and reused by every layer there.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["IntOr3", "Triple", "to_triple", "SparseCache", "SparseTensor"]

#: the engine's one "int or (x, y, z)" type: kernel sizes, strides, dilations, tensor strides
IntOr3 = int | Sequence[int]
Triple = tuple[int, int, int]


def to_triple(value: IntOr3, name: str) -> tuple[int, int, int]:
    """An int or a 3-sequence of positive ints as a 3-tuple; ValueError naming `name` otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (int,)) and not isinstance(value, bool):
        out = (int(value),) * 3
    else:
        try:
            out = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except TypeError:
            raise ValueError(f"{name} must be an int or a 3-tuple of ints, got {value!r}") from None
        if len(out) != 3:
            raise ValueError(f"{name} must be an int or a 3-tuple of ints, got {value!r}")
    if any(v <= 0 for v in out):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return out  # type: ignore[return-value]


class SparseCache:
    """Coordinate sets per tensor stride and kernel maps, shared by all tensors of one batch.

    `coords[stride]` holds the coordinates of each level, so a transposed conv returns exactly
    to the finer coordinates recorded by the strided conv; `kmaps[key]` holds kernel maps keyed
    by (tensor stride, kernel size, conv stride, dilation, transposed); `indices[(stride,
    margin)]` holds the sorted coordinate keys used to search a level.
    """

    def __init__(self) -> None:
        self.coords: dict[tuple[int, int, int], torch.Tensor] = {}
        self.kmaps: dict[tuple, Any] = {}
        self.indices: dict[tuple, Any] = {}
        self.rules: dict[tuple[int, int, int], str] = {}  # padding rule that made each strided level
        self.batch_size: int | None = None


class SparseTensor:
    """Sparse voxel features `feats [N, C]` at coordinates `coords [N, 4]` int32 `(b, x, y, z)`.

    The constructor validates its arguments once (this is the user-facing entry point);
    engine operations derive new tensors through `_derive`, which skips the checks.
    """

    __slots__ = ("feats", "coords", "stride", "cache")

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, stride: IntOr3 = 1,
                 cache: SparseCache | None = None) -> None:
        if not isinstance(coords, torch.Tensor):
            raise ValueError(f"coords must be a torch.Tensor, got {type(coords).__name__}")
        if coords.dtype != torch.int32:
            raise ValueError(f"coords must be int32 (batch, x, y, z), got {coords.dtype}; "
                             "convert with coords.int()")
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must have shape [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if coords.shape[0] == 0:
            raise ValueError("coords is empty: a SparseTensor needs at least one voxel")
        if not isinstance(feats, torch.Tensor):
            raise ValueError(f"feats must be a torch.Tensor, got {type(feats).__name__}")
        if feats.dim() != 2:
            raise ValueError(f"feats must have shape [N, C], got {tuple(feats.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        if feats.device != coords.device:
            raise ValueError(f"feats on {feats.device} but coords on {coords.device}")
        st = to_triple(stride, "stride")
        if st != (1, 1, 1):
            s = torch.tensor(st, dtype=torch.int32, device=coords.device)
            if bool(torch.any(torch.remainder(coords[:, 1:], s) != 0)):
                raise ValueError(f"coords must be multiples of stride {st}")
        if bool(coords[:, 0].min() < 0):
            raise ValueError("coords batch index (column 0) must be non-negative")
        self.feats = feats
        self.coords = coords.contiguous()
        self.stride = st
        self.cache = cache if cache is not None else SparseCache()
        self.cache.coords.setdefault(st, self.coords)

    @classmethod
    def _derive(cls, feats: torch.Tensor, coords: torch.Tensor, stride: tuple[int, int, int],
                cache: SparseCache) -> SparseTensor:
        """Fast constructor for engine outputs: no validation, shares the cache."""
        out = cls.__new__(cls)
        out.feats = feats
        out.coords = coords
        out.stride = stride
        out.cache = cache
        return out

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same coordinates, stride and shared cache, new features (rows must match)."""
        if feats.dim() != 2 or feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"feats must have shape [{self.coords.shape[0]}, C], got {tuple(feats.shape)}")
        return SparseTensor._derive(feats, self.coords, self.stride, self.cache)

    with_feats = replace

    @property
    def batch_size(self) -> int:
        """Number of samples (max batch index + 1), computed once per batch."""
        if self.cache.batch_size is None:
            self.cache.batch_size = int(self.coords[:, 0].max().item()) + 1
        return self.cache.batch_size

    @property
    def num_channels(self) -> int:
        return self.feats.shape[1]

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def to(self, *args: Any, **kwargs: Any) -> SparseTensor:
        """Like `Tensor.to` for the features; coordinates follow the device (cache too)."""
        feats = self.feats.to(*args, **kwargs)
        if feats.device == self.coords.device:
            return SparseTensor._derive(feats, self.coords, self.stride, self.cache)
        cache = SparseCache()
        cache.batch_size = self.cache.batch_size
        coords = self.coords.to(feats.device)
        cache.coords[self.stride] = coords
        return SparseTensor._derive(feats, coords, self.stride, cache)

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def cuda(self, device: Any = None) -> SparseTensor:
        return self.to(torch.device("cuda") if device is None else device)

    def detach(self) -> SparseTensor:
        return self.replace(self.feats.detach())

    def __repr__(self) -> str:
        return (f"SparseTensor(N={self.coords.shape[0]}, C={self.feats.shape[1]}, "
                f"stride={self.stride}, dtype={self.feats.dtype}, device={self.feats.device})")
