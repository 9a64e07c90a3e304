"""Kernel offsets, coordinate search and kernel maps (built once per level, cached).

Coordinates of a level are packed into int64 keys `((b·D0 + x')·D1 + y')·D2 + z'`, with
`x' = (x - lo) / tensor_stride + margin`; the margin (in steps of the level's stride) is wide
enough that every query `out + offset` of a kernel map stays inside the box, so an offset is a
constant added to the key and no per-axis range check is needed. Once per level the keys go into
a direct-address table (key → row, int32) when the box is small compared with the voxel count,
else they are sorted and each query is a `torch.searchsorted`. Measured on the 153k-voxel room
(3×3×3 map, 1 thread): table 52 ms, sorted search 137 ms. A level whose box does not fit 62 bits
(a garbage point 2^30 voxels away, a huge batch) is indexed by a 64-bit hash of `(b, x, y, z)`
instead, sorted and searched the same way, every hit verified against the stored coordinates
(exact; slower, since each query is hashed rather than offset by a constant).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .tensor import IntOr3, SparseCache, Triple, to_triple

__all__ = ["get_kernel_offsets", "CoordIndex", "coord_index", "downsample_coords", "unique_coords", "KernelMap",
           "TiledPairs", "TILE_ROWS", "BatchedPlan", "build_kernel_map", "TABLE_CELLS_PER_VOXEL", "TABLE_MAX_CELLS",
           "BOX_LIMIT"]


def get_kernel_offsets(kernel_size: IntOr3, tensor_stride: IntOr3 = 1, dilation: IntOr3 = 1,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """Offsets [K, 3] int64, torchsparse's order: x fastest when K is odd, z fastest when even."""
    kernel_size = to_triple(kernel_size, "kernel_size")
    tensor_stride = to_triple(tensor_stride, "tensor_stride")
    dilation = to_triple(dilation, "dilation")
    axes = [torch.arange(-kernel_size[i] // 2 + 1, kernel_size[i] // 2 + 1) * tensor_stride[i] * dilation[i]
            for i in range(3)]
    k = kernel_size[0] * kernel_size[1] * kernel_size[2]
    if k % 2 == 1:  # z outer, y, x inner
        gz, gy, gx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    else:  # x outer, y, z inner
        gx, gy, gz = torch.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], 1).to(device=device, dtype=torch.int64)


# A direct-address table (key -> row) replaces the binary search when the box is at most this
# many cells per voxel (int32 cells: ≤ 512 bytes per voxel, two 64-channel feature rows) and
# at most TABLE_MAX_CELLS cells (256 MB) in all.
TABLE_CELLS_PER_VOXEL = 128
TABLE_MAX_CELLS = 1 << 26
# boxes of at least this many cells (batch included) are indexed by hash
BOX_LIMIT = 1 << 62

_MIX = [m - (1 << 64) if m >= 1 << 63 else m for m in
        (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD)]


def _hash(c: torch.Tensor, seed: int) -> torch.Tensor:
    """64-bit mix of int64 rows `(b, x, y, z)` (wrapping arithmetic; collisions are checked)."""
    h = (c[:, 0] * _MIX[0]) ^ (c[:, 1] * _MIX[1]) ^ (c[:, 2] * _MIX[2]) ^ (c[:, 3] * _MIX[3]) ^ seed
    h = (h ^ (h >> 31)) * _MIX[4]
    return h ^ (h >> 29)


@dataclass
class CoordIndex:
    """Packed keys of one level's coordinates: sorted (binary search), a direct table, or hashed."""
    stride: Triple
    margin: int
    lo: list  # per-axis minimum coordinate minus margin·stride
    dims: list  # per-axis box size in steps
    sorted_keys: torch.Tensor | None = None
    perm: torch.Tensor | None = None
    table: torch.Tensor | None = None
    coords: torch.Tensor | None = None  # hash mode: the level's coordinates (int64), to verify hits
    seed: int = 0

    @property
    def hashed(self) -> bool:
        return self.coords is not None

    def pack(self, coords: torch.Tensor) -> torch.Tensor:
        """Keys of coords [M, 4] (must lie inside the margin box; box mode only)."""
        c = coords.to(torch.int64)
        d0, d1, d2 = self.dims
        x, y, z = (c[:, a + 1] - self.lo[a] if self.stride[a] == 1 else
                   torch.div(c[:, a + 1] - self.lo[a], self.stride[a], rounding_mode="floor") for a in range(3))
        return ((c[:, 0] * d0 + x) * d1 + y) * d2 + z

    def offset_keys(self, offsets: torch.Tensor) -> torch.Tensor:
        """Key deltas [K] of offsets [K, 3] (multiples of the level's stride)."""
        d0, d1, d2 = self.dims
        o = offsets.to(torch.int64)
        return ((o[:, 0] // self.stride[0]) * d1 + o[:, 1] // self.stride[1]) * d2 + o[:, 2] // self.stride[2]

    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Row of each key (inside the box) in the level, -1 where absent."""
        if self.table is not None:  # int32 rows (callers only compare and index with them)
            return torch.index_select(self.table, 0, keys.reshape(-1)).view(keys.shape)
        n = self.sorted_keys.shape[0]
        pos = torch.searchsorted(self.sorted_keys, keys).clamp_(max=n - 1)
        hit = self.sorted_keys[pos] == keys
        return torch.where(hit, self.perm[pos], torch.full_like(pos, -1))

    def _find_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """Hash mode: row of each of coords [M, 4] (int64), -1 where absent."""
        keys = _hash(coords, self.seed)
        n = self.sorted_keys.shape[0]
        pos = torch.searchsorted(self.sorted_keys, keys).clamp_(max=n - 1)
        rows = self.perm[pos]
        hit = (self.sorted_keys[pos] == keys) & (self.coords[rows] == coords).all(1)
        return torch.where(hit, rows, torch.full_like(rows, -1))

    def query(self, coords: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Rows [K, M] of `coords [M, 4] + offsets[k]`, -1 where absent.

        In box mode the offsets [K, 3] must keep the queries inside the margin box.
        """
        if not self.hashed:
            return self.find(self.pack(coords)[None, :] + self.offset_keys(offsets)[:, None])
        c = coords.to(torch.int64)
        out = []
        for o in offsets.to(torch.int64):
            out.append(self._find_coords(c + torch.cat([o.new_zeros(1), o])))
        return torch.stack(out) if out else torch.zeros(0, c.shape[0], dtype=torch.int64, device=c.device)

    def inside(self, coords: torch.Tensor) -> torch.Tensor:
        """Mask of coords [M, 4] inside the margin box (arbitrary queries need it)."""
        c = coords.to(torch.int64)
        ok = torch.ones(c.shape[0], dtype=torch.bool, device=c.device)
        if self.hashed:
            return ok
        for a in range(3):
            steps = torch.div(c[:, a + 1] - self.lo[a], self.stride[a], rounding_mode="floor")
            ok &= (steps >= 0) & (steps < self.dims[a])
        return ok

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Row of arbitrary coords [M, 4] (multiples of the stride), -1 where absent."""
        if self.hashed:
            return self._find_coords(coords.to(torch.int64)).long()
        ok = self.inside(coords)
        keys = self.pack(torch.where(ok[:, None], coords.to(torch.int64),
                                     torch.zeros_like(coords, dtype=torch.int64)))
        idx = self.find(keys).long()
        return torch.where(ok, idx, torch.full_like(idx, -1))


def coord_index(cache: SparseCache, stride: Triple, margin: int = 0) -> CoordIndex:
    """The (cached) sorted key index of the level at `stride`, with at least `margin` steps."""
    for (st, m), idx in cache.indices.items():
        if st == stride and m >= margin:
            return idx
    coords = cache.coords[stride]
    c = coords.to(torch.int64)
    mins = c[:, 1:].min(0).values.tolist()
    maxs = c[:, 1:].max(0).values.tolist()
    bmax = int(c[:, 0].max().item())
    lo = [mins[a] - margin * stride[a] for a in range(3)]
    dims = [(maxs[a] - mins[a]) // stride[a] + 1 + 2 * margin for a in range(3)]
    if cache.batch_size is None:
        cache.batch_size = bmax + 1
    if (bmax + 1) * dims[0] * dims[1] * dims[2] >= BOX_LIMIT:
        idx = _hashed_index(c, stride, margin, lo, dims)
        cache.indices[(stride, margin)] = idx
        return idx
    idx = CoordIndex(stride, margin, lo, dims)
    keys = idx.pack(coords)
    cells = (bmax + 1) * dims[0] * dims[1] * dims[2]
    if cells <= min(TABLE_CELLS_PER_VOXEL * coords.shape[0], TABLE_MAX_CELLS):
        idx.table = torch.full((cells,), -1, dtype=torch.int32, device=coords.device)
        idx.table[keys] = torch.arange(coords.shape[0], dtype=torch.int32, device=coords.device)
    else:
        idx.sorted_keys, idx.perm = torch.sort(keys)
    cache.indices[(stride, margin)] = idx
    return idx


def _hashed_index(c: torch.Tensor, stride: Triple, margin: int, lo: list, dims: list) -> CoordIndex:
    """A hash index of int64 coords `c`; re-seeded until no two coordinates share a hash."""
    for seed in range(8):
        keys, perm = torch.sort(_hash(c, seed))
        if keys.numel() < 2 or not bool((keys[1:] == keys[:-1]).any()):
            return CoordIndex(stride, margin, lo, dims, sorted_keys=keys, perm=perm, coords=c, seed=seed)
    raise RuntimeError("could not find a collision-free hash for these coordinates (duplicates?)")


def _floor_equivalent(kernel_size: Triple, conv_stride: Triple, dilation: Triple) -> bool:
    """The padded rule adds no site when every offset step lies in [0, s) on every axis (e.g. k ≤ s)."""
    for k, s, d in zip(kernel_size, conv_stride, dilation):
        lo, hi = (-k // 2 + 1) * d, (k // 2) * d
        if lo < 0 or hi > s - 1:
            return False
    return True


def new_level_ok(cache: SparseCache, new: Triple, padding_rule: str | None) -> bool:
    """False when the level exists and was made by the padded rule (a floor-rule layer then raises)."""
    if new in cache.coords and padding_rule is not None and cache.rules.get(new, "floor") != "floor":
        raise ValueError(f"the stride-{new} level of this batch was made with padding_rule="
                         f"{cache.rules[new]!r}; a layer with padding_rule='floor' cannot reach it "
                         "(use one rule per level)")
    return True


def downsample_coords(cache: SparseCache, stride: Triple, conv_stride: Triple, kernel_size: Triple = (1, 1, 1),
                      dilation: Triple = (1, 1, 1), padding_rule: str | None = "floor") -> torch.Tensor:
    """Coordinates at `stride·conv_stride` (cached: the first layer to reach a level makes them).

    `floor`: the unique `floor(c / (s·ts))·(s·ts)`. `padded`: every multiple of `s·ts` that some
    input reaches through an offset (`o = c − offset`), spconv's output sites for padding
    `(k−1)//2` on an unbounded grid. None: whatever the level has (floor if it has nothing).
    A second layer asking the same level for a different rule is an error: a level has one
    coordinate set, shared by every layer and by the transposed convs returning from it.
    """
    new = tuple(stride[i] * conv_stride[i] for i in range(3))
    rule = padding_rule or "floor"
    if rule == "padded" and _floor_equivalent(kernel_size, conv_stride, dilation):
        rule = "floor"
    if new in cache.coords:
        made = cache.rules.get(new, "floor")
        if padding_rule is not None and made != rule:
            raise ValueError(f"the stride-{new} level of this batch was made with padding_rule={made!r}; "
                             f"a layer with padding_rule={rule!r} cannot reach it (use one rule per level)")
        return cache.coords[new]
    c = cache.coords[stride]
    s = torch.tensor((1,) + new, dtype=torch.int32, device=c.device)
    if rule == "floor":
        cache.coords[new] = unique_coords(torch.div(c, s, rounding_mode="floor") * s)
    else:
        offs = get_kernel_offsets(kernel_size, stride, dilation, c.device).to(torch.int32)
        cand = []
        for o in offs:
            q = c.clone()
            q[:, 1:] -= o
            keep = (torch.remainder(q[:, 1:], s[1:]) == 0).all(1)
            cand.append(q[keep])
        cache.coords[new] = unique_coords(torch.cat(cand))
    cache.rules[new] = rule
    return cache.coords[new]


def unique_coords(coords: torch.Tensor, return_inverse: bool = False):
    """Unique rows of int coords [N, 4], sorted (b, x, y, z); 1-D unique on packed keys.

    With `return_inverse`, also the row of the result each input row went to.
    """
    c = coords.to(torch.int64)
    lo = c.min(0).values
    span = c.max(0).values - lo + 1
    d = span.tolist()
    if d[0] * d[1] * d[2] * d[3] >= 2 ** 62:
        return torch.unique(coords, dim=0, return_inverse=return_inverse)
    q = c - lo
    keys = ((q[:, 0] * d[1] + q[:, 1]) * d[2] + q[:, 2]) * d[3] + q[:, 3]
    u, inv = torch.unique(keys, return_inverse=True) if return_inverse else (torch.unique(keys), None)
    z = u % d[3]
    u = u // d[3]
    y = u % d[2]
    u = u // d[2]
    out = (torch.stack([u // d[1], u % d[1], y, z], 1) + lo).to(coords.dtype).contiguous()
    return (out, inv) if return_inverse else out


def _cell_pairs(cache: SparseCache, ts: Triple, conv_stride: Triple, kvol: int) -> tuple[list, torch.Tensor] | None:
    """Kernel map of a strided conv whose kernel is exactly its stride cell (k = s, floor rule).

    Every input then meets exactly one output — its cell — through the offset of its position in
    the cell, so the map needs no coordinate search: one unique (with inverse) and one sort by
    offset. Measured on the 153k-voxel room (k2/s2, 2 threads): ~4 ms instead of ~20 ms. None
    when the level already exists with coordinates in another order (then the search runs).
    """
    new = tuple(ts[i] * conv_stride[i] for i in range(3))
    c = cache.coords[ts]
    s = torch.tensor((1,) + new, dtype=torch.int32, device=c.device)
    q = torch.div(c, s, rounding_mode="floor") * s
    out_coords, inverse = unique_coords(q, return_inverse=True)
    if new in cache.coords and not (cache.coords[new].shape == out_coords.shape
                                    and bool(torch.equal(cache.coords[new], out_coords))):
        return None
    r = torch.div(c[:, 1:] - q[:, 1:], torch.tensor(ts, dtype=torch.int32, device=c.device), rounding_mode="floor")
    kid = ((r[:, 0] * conv_stride[1] + r[:, 1]) * conv_stride[2] + r[:, 2]).long()  # z fastest (even K)
    order = torch.sort(kid, stable=True).indices
    counts = torch.bincount(kid, minlength=kvol).tolist()
    in_idx, out_idx = order, inverse.reshape(-1)[order]
    if new not in cache.coords:
        cache.coords[new] = out_coords
        cache.rules[new] = "floor"
    return list(zip(torch.split(in_idx, counts), torch.split(out_idx, counts))), cache.coords[new]


@dataclass
class TiledPairs:
    """One direction of a map for the native kernels (outputs tiled forward, inputs backward).

    int32 index arrays per offset, sorted by the row of the tiled side, and the table
    `seg [n, ntiles + 1]` of where each tile of `TILE_ROWS` rows starts in each offset's pairs.

    `in_ptrs[j]` / `out_ptrs[j]` are the arrays' addresses (offset `wk[j]`); `keep` holds them.
    """
    in_ptrs: torch.Tensor
    out_ptrs: torch.Tensor
    seg: torch.Tensor
    wk: torch.Tensor
    n: int
    ntiles: int
    keep: list
    pairs: int = 0


# output rows per tile of the native kernels: 1024 rows of 64 floats (256 KB) stay in L2 while every
# offset visits them (room 64→64, AVX2, 1 thread: 130 ms against 157 ms offset by offset)
TILE_ROWS = 1024


def _tiled_pairs(entries: list, by_out: bool, n_rows: int) -> TiledPairs:
    arrays = []
    for k, i, o in entries:
        key = o if by_out else i
        if key.numel() > 1 and not bool((key[1:] >= key[:-1]).all()):  # sorted coords: already sorted
            perm = torch.sort(key, stable=True).indices
            i, o = i[perm], o[perm]
        arrays.append((k, i.to(torch.int32).contiguous(), o.to(torch.int32).contiguous()))
    ntiles = max(1, -(-n_rows // TILE_ROWS))
    bounds = torch.arange(ntiles + 1, dtype=torch.int32) * TILE_ROWS
    seg = [torch.searchsorted(o if by_out else i, bounds) for _, i, o in arrays]
    return TiledPairs(
        in_ptrs=torch.tensor([a[1].data_ptr() for a in arrays], dtype=torch.int64),
        out_ptrs=torch.tensor([a[2].data_ptr() for a in arrays], dtype=torch.int64),
        seg=(torch.stack(seg) if seg else torch.zeros(0, ntiles + 1, dtype=torch.int64)).to(torch.int64).contiguous(),
        wk=torch.tensor([a[0] for a in arrays], dtype=torch.int64), n=len(arrays), ntiles=ntiles, keep=arrays,
        pairs=sum(a[1].numel() for a in arrays))


@dataclass
class BatchedPlan:
    """Index tensors for one gather → a few batched GEMMs → one deterministic reduction per conv.

    The non-identity offsets are grouped into buckets of similar pair counts; bucket `b` holds
    `kb` offsets, each padded to `m` rows, at rows `[r0, r0 + kb·m)` of a flat buffer of `rows`
    rows, its weights at `[w0, w0 + kb)` of `kernel[ks]`. `gather_in` / `gather_out` give each
    flat row's input / output row (padding: input 0, output `n_out`, a zero row appended to the
    output gradient). `out_perm` lists the real flat rows sorted by (output row, offset) and
    `out_lengths` the pairs per output row, so the scatter is `segment_reduce` — a fixed-order
    sum, no atomics, bit-identical run to run; `in_perm` / `in_lengths` the same for inputs.
    Built once per kernel map (host syncs allowed here, none when it is used).
    """
    ks: torch.Tensor
    buckets: list  # (r0, kb, m, w0)
    rows: int
    gather_in: torch.Tensor
    gather_out: torch.Tensor
    out_perm: torch.Tensor
    out_lengths: torch.Tensor
    in_perm: torch.Tensor
    in_lengths: torch.Tensor


# offsets share a bucket while their counts waste at most this fraction of its padded rows
BUCKET_WASTE = 0.25


def _round_bucket(m: int) -> int:
    """`m` rounded up to 1/8 of its power of two (≤ 12.5 % padding; few distinct sizes)."""
    if m <= 64:
        return max(m, 1)
    step = 1 << (m.bit_length() - 4)
    return -(-m // step) * step


def _make_batched_plan(kmap: KernelMap, device: torch.device) -> BatchedPlan:
    entries = sorted(kmap.offset_pairs(), key=lambda e: -e[1].numel())
    buckets, order, i = [], [], 0
    while i < len(entries):
        top = entries[i][1].numel()
        j = i + 1
        while j < len(entries) and entries[j][1].numel() >= (1 - BUCKET_WASTE) * top:
            j += 1
        buckets.append((i, j, _round_bucket(top)))
        i = j
    rows, w0, spans = 0, 0, []
    for lo, hi, m in buckets:
        spans.append((rows, hi - lo, m, w0))
        rows += (hi - lo) * m
        w0 += hi - lo
    gather_in = torch.zeros(rows, dtype=torch.int64, device=device)
    gather_out = torch.full((rows,), kmap.n_out, dtype=torch.int64, device=device)
    pos, ins, outs = [], [], []
    for (r0, kb, m, _), (lo, hi, _) in zip(spans, buckets):
        for t, (k, in_idx, out_idx) in enumerate(entries[lo:hi]):
            p = torch.arange(r0 + t * m, r0 + t * m + in_idx.numel(), device=device)
            pos.append(p)
            ins.append(in_idx)
            outs.append(out_idx)
            order.append(k)
    if pos:
        pos_t, in_t, out_t = torch.cat(pos), torch.cat(ins).to(device), torch.cat(outs).to(device)
        gather_in[pos_t] = in_t
        gather_out[pos_t] = out_t
    else:
        pos_t = in_t = out_t = torch.zeros(0, dtype=torch.int64, device=device)
    # stable sorts keep the offsets' order within each row: a fixed summation order
    out_perm = pos_t[torch.sort(out_t, stable=True).indices]
    in_perm = pos_t[torch.sort(in_t, stable=True).indices]
    return BatchedPlan(
        ks=torch.tensor(order, dtype=torch.int64, device=device), buckets=spans, rows=rows,
        gather_in=gather_in, gather_out=gather_out, out_perm=out_perm,
        out_lengths=torch.bincount(out_t, minlength=kmap.n_out), in_perm=in_perm,
        in_lengths=torch.bincount(in_t, minlength=kmap.n_in))


@dataclass
class KernelMap:
    """Input/output pairs per kernel offset.

    `pairs[k] = (in_idx, out_idx)` (int64, or None for an identity centre: a plain GEMM);
    `nbr` (lazily) the neighbour table [K, n_out] with -1 for missing inputs. Whatever a backend
    derives from the pairs (pointer tables, padded index tensors, another library's layout) is
    built once and kept in `plans`, so a cached layer does no host work and no host sync.
    """
    n_in: int
    n_out: int
    kernel_volume: int
    pairs: list
    identity: int | None = None  # offset index whose map is the identity
    _nbr: torch.Tensor | None = field(default=None, repr=False)
    _transposed: KernelMap | None = field(default=None, repr=False)
    plans: dict = field(default_factory=dict, repr=False)

    def transposed(self) -> KernelMap:
        """The same map with inputs and outputs swapped (for transposed convolution)."""
        if self._transposed is None:
            self._transposed = KernelMap(self.n_out, self.n_in, self.kernel_volume,
                                         [None if p is None else (p[1], p[0]) for p in self.pairs],
                                         self.identity)
            self._transposed._transposed = self
        return self._transposed

    def offset_pairs(self) -> list:
        """`[(k, in_idx, out_idx)]` for every non-empty, non-identity offset (cached)."""
        if "offsets" not in self.plans:
            self.plans["offsets"] = [(k, p[0], p[1]) for k, p in enumerate(self.pairs)
                                     if p is not None and k != self.identity and p[0].numel() > 0]
        return self.plans["offsets"]

    def max_pairs(self) -> int:
        return max((e[1].numel() for e in self.offset_pairs()), default=0)

    def tiled_pairs(self, forward: bool) -> TiledPairs:
        """The native kernels' tables (CPU; forward: tiles of outputs, backward: of inputs; cached)."""
        key = "tiled_fwd" if forward else "tiled_bwd"
        if key not in self.plans:
            self.plans[key] = _tiled_pairs(self.offset_pairs(), forward, self.n_out if forward else self.n_in)
        return self.plans[key]

    def batched_plan(self, device: torch.device) -> BatchedPlan:
        """The padded, bucketed index tensors of the batched path (cached per device)."""
        key = ("batched", str(device))
        if key not in self.plans:
            self.plans[key] = _make_batched_plan(self, device)
        return self.plans[key]

    @property
    def num_pairs(self) -> int:
        return sum(self.n_out if p is None else int(p[0].shape[0]) for p in self.pairs)

    def neighbour_table(self, device: torch.device) -> torch.Tensor:
        """[K, n_out] input row per (offset, output), -1 where missing."""
        if self._nbr is None:
            nbr = torch.full((self.kernel_volume, self.n_out), -1, dtype=torch.int64, device=device)
            for k, p in enumerate(self.pairs):
                if p is None:
                    nbr[k] = torch.arange(self.n_out, device=device)
                else:
                    nbr[k, p[1]] = p[0]
            self._nbr = nbr
        return self._nbr


def _pairs_from_columns(cols: torch.Tensor) -> list:
    """[(in_idx, out_idx)] per row of the [K', n_out] neighbour columns, with one nonzero call."""
    n_out = cols.shape[1]
    flat = torch.nonzero(cols.reshape(-1) >= 0).squeeze(1)
    in_idx = torch.index_select(cols.reshape(-1), 0, flat).long()
    k_idx = torch.div(flat, n_out, rounding_mode="floor")
    out_idx = flat - k_idx * n_out
    counts = torch.bincount(k_idx, minlength=cols.shape[0]).tolist()
    return list(zip(torch.split(in_idx, counts), torch.split(out_idx, counts)))


def build_kernel_map(cache: SparseCache, ts: Triple, kernel_size: Triple, conv_stride: Triple,
                     dilation: Triple, padding_rule: str | None = "floor") -> tuple[KernelMap, torch.Tensor, Triple]:
    """Kernel map of a (non-transposed) conv on `x`, with its output coords and stride (cached).

    Output `o` gathers input `o + offset`. Stride 1: outputs at the input coordinates and, for
    odd kernels, the map of `-δ` is the map of `δ` with in/out swapped (derived, not searched).
    Strided: outputs as `downsample_coords` with `padding_rule`.
    """
    key = (ts, kernel_size, conv_stride, dilation, False)
    strided = conv_stride != (1, 1, 1)
    out_stride = tuple(ts[i] * conv_stride[i] for i in range(3)) if strided else ts
    if key in cache.kmaps:
        if strided:  # checks the rule against the level's
            downsample_coords(cache, ts, conv_stride, kernel_size, dilation, padding_rule)
        return cache.kmaps[key], cache.coords[out_stride], out_stride
    in_coords = cache.coords[ts]
    device = in_coords.device
    offsets = get_kernel_offsets(kernel_size, ts, dilation, device)
    if (strided and kernel_size == conv_stride and dilation == (1, 1, 1) and offsets.shape[0] % 2 == 0
            and _floor_equivalent(kernel_size, conv_stride, dilation)):
        if new_level_ok(cache, out_stride, padding_rule):
            cell = _cell_pairs(cache, ts, conv_stride, offsets.shape[0])
            if cell is not None:
                pairs, out_coords = cell
                kmap = KernelMap(in_coords.shape[0], out_coords.shape[0], offsets.shape[0], pairs, None)
                cache.kmaps[key] = kmap
                return kmap, out_coords, out_stride
    # furthest query from the level's box, in steps: kernel half-width·dilation + down-sampling
    # (the padded rule's outputs reach one half-width further)
    half = max((kernel_size[i] // 2) * dilation[i] for i in range(3))
    reach = 2 * half + max(conv_stride) + 1
    index = coord_index(cache, ts, margin=reach)
    out_coords = (downsample_coords(cache, ts, conv_stride, kernel_size, dilation, padding_rule) if strided
                  else cache.coords[ts])
    kvol = offsets.shape[0]
    n_in, n_out = in_coords.shape[0], out_coords.shape[0]
    pairs: list = [None] * kvol
    identity = None
    symmetric = (not strided) and all(k % 2 == 1 for k in kernel_size)
    if symmetric:
        centre = kvol // 2
        identity = centre
        if centre:
            found = _pairs_from_columns(index.query(out_coords, offsets[:centre]))
            for k, (in_idx, out_idx) in enumerate(found):
                pairs[k] = (in_idx, out_idx)
                pairs[kvol - 1 - k] = (out_idx, in_idx)
    else:
        pairs = _pairs_from_columns(index.query(out_coords, offsets))
    kmap = KernelMap(n_in, n_out, kvol, pairs, identity)
    cache.kmaps[key] = kmap
    return kmap, out_coords, out_stride
