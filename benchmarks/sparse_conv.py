"""Speed and memory of the `i2p.sparse` engine, with its pure path and spconv side by side.

Prints, for a procedurally generated room (about 150k voxels at 2.5 cm, surfaces with
furniture) and ModelNet-sized batches (32 shapes × 2048 points, voxel 0.05 on unit-sphere
shapes): kernel-map time, forward / backward ms of a submanifold 3×3×3 conv at 32/64/128
channels, a 2×2×2 stride-2 down-sample and its transposed up-sample, effective GFLOP/s on the
useful FLOPs (2·pairs·Cin·Cout forward, twice that backward), the ratio to dense `torch.mm`
measured right after the row, and peak memory. Engines, all in one process:
- `i2p` — the engine as it runs here (compiled kernels on CPU where they load, the batched path
  on CUDA); its kmap time includes building the tables that implementation uses;
- `i2p-pure` (`--compare-pure`) — the pure PyTorch loop, what `I2P_SPARSE_NATIVE=0` runs (before);
- `i2p/spconv`, `i2p/torchsparse` (`--backends`) — the engine's maps, that library's arithmetic;
- `spconv` — spconv's own modules and maps, at 1 thread (correct) and 2 threads (races, #679).

`--emulate-avx2` re-runs the script with the compiled kernels, ATen and MKL all capped at AVX2
(`I2P_SPARSE_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`): an AVX-512 machine
standing in for an AVX2 one (same vector width; not the same cache or memory system).

Usage: python benchmarks/sparse_conv.py [--reps 5] [--threads 2] [--quick] [--omp-passive] [--compare-pure]
       [--emulate-avx2] [--no-spconv] [--no-memory] [--backends spconv torchsparse] [--device cuda]
       [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from i2p.sparse import Conv3d, SparseTensor, set_backend, sparse_collate, sparse_quantize  # noqa: E402
from i2p.sparse.backends.i2p_backend import choose_impl, force_impl  # noqa: E402
from i2p.sparse.kmap import build_kernel_map  # noqa: E402

# ---------------------------------------------------------------------------------------------
# procedural data


def _sample_box(rng: np.random.Generator, lo, hi, density: float) -> np.ndarray:
    """Points on the 6 faces of an axis-aligned box, `density` points per m²."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    out = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        area = (hi[a] - lo[a]) * (hi[b] - lo[b])
        for side in (lo[axis], hi[axis]):
            n = rng.poisson(area * density)
            p = np.empty((n, 3))
            p[:, a] = rng.uniform(lo[a], hi[a], n)
            p[:, b] = rng.uniform(lo[b], hi[b], n)
            p[:, axis] = side
            out.append(p)
    return np.concatenate(out)


def _sample_cylinder(rng, centre, radius, height, density) -> np.ndarray:
    """Points on a vertical cylinder's side and caps."""
    n = rng.poisson(2 * math.pi * radius * height * density)
    t = rng.uniform(0, 2 * math.pi, n)
    side = np.stack([radius * np.cos(t), radius * np.sin(t), rng.uniform(0, height, n)], 1)
    m = rng.poisson(math.pi * radius ** 2 * density)
    r = radius * np.sqrt(rng.uniform(0, 1, 2 * m))
    t = rng.uniform(0, 2 * math.pi, 2 * m)
    caps = np.stack([r * np.cos(t), r * np.sin(t), np.repeat([0.0, height], m)], 1)
    return np.concatenate([side, caps]) + np.asarray(centre, float)


def _sample_sphere(rng, centre, radius, density) -> np.ndarray:
    n = rng.poisson(4 * math.pi * radius ** 2 * density)
    v = rng.normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True) + np.asarray(centre, float)


def _rot_z(p: np.ndarray, angle: float, about) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    q = p - about
    return np.stack([c * q[:, 0] - s * q[:, 1], s * q[:, 0] + c * q[:, 1], q[:, 2]], 1) + about


def room_cloud(seed: int = 0, density: float = 4000.0, noise: float = 0.002) -> np.ndarray:
    """A 4 × 3.5 × 2.6 m room: floor, ceiling, walls, tables, chairs, shelves, sofa, lamps, bins.

    Furniture is rotated about z at random angles so surfaces cut the voxel grid obliquely, and
    points get Gaussian noise (sensor-like thickness); both raise the neighbour count above the
    9 of an axis-aligned plane. The room is shifted off the voxel grid so that walls do not lie
    exactly on voxel boundaries (which would double every wall's thickness).
    """
    rng = np.random.default_rng(seed)
    W, D, H = 4.0, 3.5, 2.6
    parts = [_sample_box(rng, (0, 0, 0), (W, D, H), density)]  # floor, ceiling, 4 walls
    for _ in range(2):  # tables: top + 4 legs
        cx, cy, a = rng.uniform(0.8, W - 0.8), rng.uniform(0.8, D - 0.8), rng.uniform(0, math.pi)
        w, d = rng.uniform(0.8, 1.6), rng.uniform(0.6, 0.9)
        t = [_sample_box(rng, (cx - w / 2, cy - d / 2, 0.72), (cx + w / 2, cy + d / 2, 0.76), density)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                leg = (cx + sx * (w / 2 - 0.05), cy + sy * (d / 2 - 0.05), 0)
                t.append(_sample_cylinder(rng, leg, 0.025, 0.72, density))
        parts.append(_rot_z(np.concatenate(t), a, np.array([cx, cy, 0])))
    for _ in range(5):  # chairs: seat, back, legs
        cx, cy, a = rng.uniform(0.4, W - 0.4), rng.uniform(0.4, D - 0.4), rng.uniform(0, 2 * math.pi)
        c = [_sample_box(rng, (cx - 0.22, cy - 0.22, 0.43), (cx + 0.22, cy + 0.22, 0.46), density),
             _sample_box(rng, (cx - 0.22, cy + 0.19, 0.46), (cx + 0.22, cy + 0.22, 0.9), density)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                c.append(_sample_cylinder(rng, (cx + sx * 0.19, cy + sy * 0.19, 0), 0.015, 0.43, density))
        parts.append(_rot_z(np.concatenate(c), a, np.array([cx, cy, 0])))
    for i in range(2):  # shelves against the walls: a box with 4 boards
        x0 = 0.3 + i * 1.3
        s = [_sample_box(rng, (x0, D - 0.4, 0), (x0 + 0.9, D - 0.02, 2.0), density)]
        for z in (0.5, 1.0, 1.5):
            s.append(_sample_box(rng, (x0, D - 0.4, z), (x0 + 0.9, D - 0.02, z + 0.02), density))
        parts.append(np.concatenate(s))
    sofa = np.concatenate([_sample_box(rng, (0.05, 0.3, 0), (0.95, 2.3, 0.45), density),
                           _sample_box(rng, (0.05, 0.3, 0.45), (0.25, 2.3, 0.85), density)])
    parts.append(_rot_z(sofa, 0.15, np.array([0.5, 1.3, 0])))
    for _ in range(4):  # lamps and bins
        cx, cy = rng.uniform(0.3, W - 0.3), rng.uniform(0.3, D - 0.3)
        parts.append(_sample_cylinder(rng, (cx, cy, 0), rng.uniform(0.1, 0.2), rng.uniform(0.3, 0.6), density))
        parts.append(_sample_sphere(rng, (cx, cy, rng.uniform(1.2, 1.8)), rng.uniform(0.1, 0.25), density))
    pts = np.concatenate(parts)
    pts += rng.normal(scale=noise, size=pts.shape) + np.array([0.0113, 0.0071, 0.0137])
    return pts.astype(np.float32)


def shape_cloud(rng: np.random.Generator, n: int = 2048) -> np.ndarray:
    """One ModelNet-like shape: a random primitive surface (or two), rotated, in the unit sphere."""
    kind = rng.integers(0, 4)
    if kind == 0:
        p = _sample_box(rng, -rng.uniform(0.2, 1, 3), rng.uniform(0.2, 1, 3), 1.0e4)
    elif kind == 1:
        p = _sample_cylinder(rng, (0, 0, -0.5), rng.uniform(0.2, 0.6), rng.uniform(0.5, 1.5), 1.0e4)
    elif kind == 2:
        p = _sample_sphere(rng, (0, 0, 0), 1.0, 1.0e4) * rng.uniform(0.3, 1, 3)
    else:
        p = np.concatenate([_sample_box(rng, (-1, -0.6, -0.05), (1, 0.6, 0.05), 1.0e4),
                            _sample_cylinder(rng, (0, 0, -1), 0.08, 1.0, 1.0e4)])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    p = p[rng.choice(len(p), n, replace=len(p) < n)] @ q.T
    p -= p.mean(0)
    return (p / np.linalg.norm(p, axis=1).max()).astype(np.float32)


def make_inputs(channels: int, device: str = "cpu"):
    """{name: SparseTensor} at `channels` input features."""
    g = torch.Generator().manual_seed(0)
    out = {}
    pts = room_cloud()
    coords, _, _ = sparse_quantize(pts, 0.025)
    x, _ = sparse_collate([(coords, torch.randn(len(coords), channels, generator=g))])
    out["room"] = x
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(32):
        c, _, _ = sparse_quantize(shape_cloud(rng), 0.05)
        samples.append((c, torch.randn(len(c), channels, generator=g)))
    out["modelnet"] = sparse_collate(samples)[0]
    return {k: v.to(device) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# timing

CASES = ("subm3", "down2", "up2")
_DEVICE = "cpu"
_AUTOCAST: torch.dtype | None = None  # --autocast: every engine's forward and backward under torch.autocast


def _amp():
    if _AUTOCAST is None:
        return contextlib.nullcontext()
    return torch.autocast(_DEVICE.split(":")[0], dtype=_AUTOCAST)


def _sync() -> None:
    if _DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], reps: int, setup: Callable[[], object] | None = None) -> float:
    """Median wall ms of `fn` over `reps` runs after one warm-up (min is too optimistic on a shared box)."""
    if setup:
        setup()
    fn()
    _sync()
    ts = []
    for _ in range(reps):
        if setup:
            setup()
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def dense_mm_gflops(channels: int, reps: int) -> float:
    a = torch.randn(65536, channels, device=_DEVICE)
    w = torch.randn(channels, channels, device=_DEVICE)
    ms = _time(lambda: torch.mm(a, w), max(reps, 10))
    return 2 * 65536 * channels * channels / ms / 1e6


def _kernel(case: str):
    return ((3, 3, 3), (1, 1, 1)) if case == "subm3" else ((2, 2, 2), (2, 2, 2))


class Ours:
    """The engine's Conv3d; `impl` None = what it picks here, `backend` the library doing the arithmetic."""

    def __init__(self, x: SparseTensor, channels: int, name: str = "i2p", impl: str | None = None,
                 backend: str = "i2p") -> None:
        torch.manual_seed(0)
        self.x, self.c, self.name, self.impl, self.backend = x, channels, name, impl, backend
        self.sub = Conv3d(channels, channels, 3).to(x.device)
        self.down = Conv3d(channels, channels, 2, stride=2).to(x.device)
        self.up = Conv3d(channels, channels, 2, stride=2, transposed=True).to(x.device)
        for m in (self.sub, self.down, self.up):
            set_backend(m, backend)

    def _ctx(self):
        return force_impl(self.impl) if self.impl else contextlib.nullcontext()

    def fresh(self) -> SparseTensor:
        """The input with an empty cache (so kernel maps are rebuilt)."""
        return SparseTensor(self.x.feats, self.x.coords)

    def _plan(self, kmap) -> None:
        """Build what the implementation derives from the map (counted as kernel-map time)."""
        if self.backend != "i2p":
            if self.backend == "spconv":
                from i2p.sparse.backends.spconv_backend import spconv_pairs
                spconv_pairs(kmap, self.x.device)
            else:
                from i2p.sparse.backends.torchsparse_backend import torchsparse_pairs
                torchsparse_pairs(kmap, self.x.device)
            return
        with self._ctx():
            impl = choose_impl(self.x.feats, self.sub.kernel, 1)
        if impl == "native":
            kmap.tiled_pairs(True)
            kmap.tiled_pairs(False)
        elif impl == "batched":
            kmap.batched_plan(self.x.device)

    def kmap(self, case: str) -> None:
        x = self.fresh()
        if case == "up2":  # the up-sample's map is the cached down-sample map, transposed (as spconv's indice_key)
            down = self.down_maps.pop()
            self._plan(down.transposed())
        else:
            ks, st = _kernel(case)
            self._plan(build_kernel_map(x.cache, x.stride, ks, st, (1, 1, 1))[0])
        _sync()

    def kmap_setup(self, case: str) -> None:
        """Untimed preparation of `kmap(case)`: the up-sample needs a fresh down-sample map."""
        if case == "up2":
            x = self.fresh()
            self.down_maps = [build_kernel_map(x.cache, x.stride, (2, 2, 2), (2, 2, 2), (1, 1, 1))[0]]

    def prepare(self, case: str):
        """(input, layer, pairs) with the kernel map already cached."""
        x = self.fresh()
        with self._ctx():
            if case == "subm3":
                inp, layer = x, self.sub
            elif case == "down2":
                inp, layer = x, self.down
            else:
                inp, layer = self.down(x).detach(), self.up
            layer(inp)
        key = [k for k in inp.cache.kmaps if k[1] == ((3,) * 3 if case == "subm3" else (2,) * 3)][0]
        return inp, layer, inp.cache.kmaps[key].num_pairs

    def step(self, inp, layer, grad: torch.Tensor | None):
        f = inp.feats.detach().requires_grad_(True)
        with self._ctx():
            with _amp():
                y = layer(inp.replace(f))
            if grad is not None:
                y.feats.backward(grad.to(y.feats.dtype))
        return y.feats


class Spconv:
    name = "spconv"

    def __init__(self, x: SparseTensor, channels: int, ours: Ours) -> None:
        import spconv.pytorch as sp
        if x.device.type == "cpu":
            import spconv.pytorch.cppcore as cc
            import spconv.pytorch.hash as hh
            import spconv.pytorch.ops as ops
            import spconv.pytorch.utils as uu
            for m in (cc, ops, hh, uu):  # the CPU path needs no CUDA stream
                m.get_current_stream = lambda: 0
        self.sp = sp
        c = x.coords.clone()
        # spconv needs non-negative indices: shift by a multiple of 8 so down-sampling cells agree
        c[:, 1:] -= torch.div(c[:, 1:].min(0).values, 8, rounding_mode="floor") * 8
        self.indices = c.int().contiguous()
        self.shape = (c[:, 1:].max(0).values + 2).tolist()
        self.batch = x.batch_size
        self.feats = x.feats
        dev = x.device
        self.sub = sp.SubMConv3d(channels, channels, 3, bias=False, indice_key="s").to(dev)
        self.down = sp.SparseConv3d(channels, channels, 2, stride=2, bias=False, indice_key="d").to(dev)
        self.up = sp.SparseInverseConv3d(channels, channels, 2, bias=False, indice_key="d").to(dev)
        with torch.no_grad():  # same weights as ours: spconv 2.x keeps [out, kx, ky, kz, in]
            for mine, theirs, k in ((ours.sub, self.sub, 3), (ours.down, self.down, 2), (ours.up, self.up, 2)):
                w = mine.kernel.detach()
                w = w.view(k, k, k, channels, channels).permute(4, 2, 1, 0, 3) if k % 2 else \
                    w.view(k, k, k, channels, channels).permute(4, 0, 1, 2, 3)
                theirs.weight.copy_(w.reshape(theirs.weight.shape))

    def fresh(self):
        return self.sp.SparseConvTensor(self.feats, self.indices, self.shape, self.batch)

    def prepare(self, case: str):
        x = self.fresh()
        if case == "subm3":
            inp, layer = x, self.sub
        elif case == "down2":
            inp, layer = x, self.down
        else:
            d = self.down(x)
            inp, layer = d.replace_feature(d.features.detach()), self.up
        layer(inp)
        return inp, layer, None

    def step(self, inp, layer, grad):
        f = inp.features.detach().requires_grad_(True)
        with _amp():
            y = layer(inp.replace_feature(f))
        if grad is not None:
            y.features.backward(grad.to(y.features.dtype))
        return y.features

    def first_forward(self, case: str):
        """Forward on a fresh tensor: kernel map included."""
        x = self.fresh()
        if case == "subm3":
            return self.sub(x)
        if case == "down2":
            return self.down(x)
        d = self.down(self.fresh())
        return self.up(d.replace_feature(d.features.detach()))


def bench_engine(eng, case: str, reps: int) -> dict:
    inp, layer, pairs = eng.prepare(case)
    y = eng.step(inp, layer, None)
    grad = torch.randn_like(y)
    fwd = _time(lambda: eng.step(inp, layer, None), reps)
    both = _time(lambda: eng.step(inp, layer, grad), reps)
    if isinstance(eng, Ours):
        km = _time(lambda: eng.kmap(case), reps, setup=lambda: eng.kmap_setup(case))
    else:
        first = _time(lambda: eng.first_forward(case), reps)
        if case == "up2":  # first_forward also ran the down-sample: subtract its cached forward
            first -= _time(lambda: eng.step(*eng.prepare("down2")[:2], None), reps)
        km = max(first - fwd, 0.0)
    return {"kmap": km, "fwd": fwd, "bwd": max(both - fwd, 0.0), "pairs": pairs, "out": y}


# ---------------------------------------------------------------------------------------------
# peak memory: each (engine, case) once in a fresh process


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child_memory(path: str, engine: str, case: str, channels: int, threads: int) -> None:
    """Runs in a fresh process: prints the peak RSS growth (MB) over kernel map + forward + backward.

    RSS is sampled every 0.5 ms by a thread (tracemalloc does not see torch's allocations and
    `ru_maxrss` also remembers the peaks of start-up); large buffers are mmapped by the
    allocator, so RSS follows what is live.
    """
    import threading
    torch.set_num_threads(threads)
    data = torch.load(path)
    x = SparseTensor(data["feats"][:, :channels].contiguous(), data["coords"])
    ours = Ours(x, channels, impl="loop" if engine == "ours-pure" else None)
    eng = Spconv(x, channels, ours) if engine == "spconv" else ours
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    inp, layer, _ = eng.prepare(case)
    y = eng.step(inp, layer, None)
    eng.step(inp, layer, torch.ones_like(y))
    done.set()
    t.join()
    print(f"PEAK {max(peak[0], _rss_mb()) - base:.1f}")


def peak_memory(x: SparseTensor, engine: str, case: str, channels: int, threads: int, tmp: str) -> float:
    torch.save({"feats": x.feats, "coords": x.coords}, tmp)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-memory", tmp, engine, case,
                          str(channels), str(threads)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("PEAK"):
            return float(line.split()[1])
    return float("nan")


# ---------------------------------------------------------------------------------------------
# main


def spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
        return True
    except Exception:
        return False


def _diff(ref: torch.Tensor | None, out: torch.Tensor, case: str) -> float:
    """Max |out − i2p out| (same weights; spconv's own down2 rows are ordered differently: nan)."""
    if ref is None or ref.shape != out.shape:
        return float("nan")
    return float((ref.detach().float() - out.detach().float()).abs().max())


def _reexec(env_update: dict[str, str], drop: tuple[str, ...]) -> None:
    env = dict(os.environ, **env_update)
    argv = [a for a in sys.argv[1:] if a not in drop]
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + argv, env)


AVX2_ENV = {"I2P_SPARSE_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def main() -> None:
    global _DEVICE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (median; default 5, --quick 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="64 channels only, 3 repetitions unless --reps")
    ap.add_argument("--no-spconv", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--compare-pure", action="store_true", help="add the pure PyTorch path (I2P_SPARSE_NATIVE=0)")
    ap.add_argument("--backends", nargs="*", default=[], choices=["spconv", "torchsparse"],
                    help="add the engine's convs run by these libraries")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"],
                    help="time every engine under torch.autocast (Lightning's bf16-mixed / 16-mixed)")
    ap.add_argument("--json", default=None, help="also write the rows and the summary here")
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="cap the compiled kernels, ATen and MKL at AVX2 (re-executes with " +
                         " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) + ")")
    ap.add_argument("--omp-passive", action="store_true",
                    help="re-run with OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of "
                         "spinning): on a machine shared with other jobs, spinning threads of every "
                         "engine steal the cores they wait for")
    ap.add_argument("--child-memory", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.omp_passive and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        _reexec({"OMP_WAIT_POLICY": "PASSIVE"}, ())
    if args.emulate_avx2 and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        _reexec(AVX2_ENV, ())
    if args.child_memory:
        path, engine, case, c, th = args.child_memory
        _child_memory(path, engine, case, int(c), int(th))
        return
    global _AUTOCAST
    _DEVICE = args.device
    _AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.autocast]
    cuda = _DEVICE.startswith("cuda")
    reps = args.reps or (3 if args.quick else 5)
    widths = (64,) if args.quick else (32, 64, 128)
    use_sp = spconv_available() and not args.no_spconv
    tmp = os.path.join("/tmp", f"i2p_sparse_bench_{os.getpid()}.pt")
    from i2p.sparse import backend_available, native
    backends = [b for b in args.backends if backend_available(b)]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, device {_DEVICE}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, autocast {args.autocast}; "
          f"i2p.sparse: {native.status()}; "
          f"spconv {'yes' if use_sp else 'not importable'}; backends {backends or 'none'}; median of {reps} runs")
    torch.set_num_threads(args.threads)
    inputs = make_inputs(max(widths), _DEVICE)
    dense = {c: dense_mm_gflops(c, reps) for c in widths}
    print(f"dense torch.mm [65536, C] x [C, C] at {args.threads} threads, at start: "
          + ", ".join(f"C={c}: {g:.0f}" for c, g in dense.items()) + " GFLOP/s")
    for name, x in inputs.items():
        km = build_kernel_map(SparseTensor(x.feats, x.coords).cache, (1, 1, 1), (3,) * 3, (1,) * 3, (1,) * 3)[0]
        print(f"{name}: {len(x)} voxels, batch {x.batch_size}, {km.num_pairs / len(x):.2f} active neighbours "
              "per voxel (3x3x3, centre included)")
    header = (f"{'cloud':8s} {'case':6s} {'C':>4s} {'engine':15s} {'thr':>3s} {'kmap':>7s} {'fwd':>8s} {'bwd':>8s} "
              f"{'total':>8s} {'GF/s f':>7s} {'GF/s b':>7s} {'%dense':>6s} {'peakMB':>7s} {'|diff|':>8s}")
    print("\n(times in ms; total = kmap + fwd + bwd; GF/s on useful FLOPs 2*pairs*Cin*Cout fwd, twice that bwd;"
          "\n %dense = (fwd+bwd) GF/s over dense torch.mm GF/s, same threads and C, measured right after the row;"
          "\n kmap of i2p = its map plus the tables its implementation builds from it; of up2 = deriving the"
          "\n map from the cached down2 map (spconv: shared indice_key); spconv's = first forward - cached forward;"
          "\n peakMB = peak RSS growth over kmap+fwd+bwd in a fresh process, RSS sampled every 0.5 ms;"
          "\n |diff| = max |output - i2p output|, same weights (spconv's own down2 rows are ordered differently))")
    print(header)
    print("-" * len(header))
    rows = []
    threads_ours = [args.threads] + ([1] if args.threads != 1 and not cuda else [])
    for name, x0 in inputs.items():
        for c in widths:
            x = SparseTensor(x0.feats[:, :c].contiguous(), x0.coords)
            cases = CASES if c == 64 else ("subm3",)
            ours = Ours(x, c)
            engines = [(ours, th) for th in threads_ours]
            if args.compare_pure:
                engines += [(Ours(x, c, "i2p-pure", impl="loop"), th) for th in threads_ours]
            engines += [(Ours(x, c, f"i2p/{b}", backend=b), args.threads) for b in backends]
            if use_sp:
                sp = Spconv(x, c, ours)
                engines += [(sp, 1)] if cuda else [(sp, 1), (sp, 2)]
            for case in cases:
                ref_out, ref_pairs = None, None
                for eng, th in engines:
                    torch.set_num_threads(th)
                    try:
                        r = bench_engine(eng, case, reps)
                    except Exception as err:  # e.g. a library without this dtype: say so, go on
                        torch.set_num_threads(args.threads)
                        print(f"{name:8s} {case:6s} {c:4d} {eng.name:15s} {th:3d} failed: {type(err).__name__}: "
                              f"{str(err)[:80]}", flush=True)
                        rows.append(dict(cloud=name, case=case, c=c, engine=eng.name, th=th,
                                         error=f"{type(err).__name__}: {err}"))
                        continue
                    dense_th = dense_mm_gflops(c, reps)  # right now: the load of a shared box drifts
                    torch.set_num_threads(args.threads)
                    if eng is ours and ref_out is None:
                        ref_out, ref_pairs = r["out"], r["pairs"]
                    pairs = r["pairs"] if r["pairs"] is not None else ref_pairs
                    gf_f = 2 * pairs * c * c / r["fwd"] / 1e6
                    gf_b = 4 * pairs * c * c / max(r["bwd"], 1e-9) / 1e6
                    gf_t = 6 * pairs * c * c / (r["fwd"] + r["bwd"]) / 1e6
                    mem = float("nan")
                    kind = {"i2p": "ours", "i2p-pure": "ours-pure", "spconv": "spconv"}.get(eng.name)
                    if not args.no_memory and not cuda and kind and th == (args.threads if kind != "spconv" else 1):
                        mem = peak_memory(x, kind, case, c, th, tmp)
                    diff = 0.0 if eng is ours else (float("nan") if (eng.name == "spconv" and case == "down2")
                                                    else _diff(ref_out, r["out"], case))
                    row = dict(cloud=name, case=case, c=c, engine=eng.name, th=th,
                               kmap=r["kmap"], fwd=r["fwd"], bwd=r["bwd"], total=r["kmap"] + r["fwd"] + r["bwd"],
                               gf_f=gf_f, gf_b=gf_b, pct=100 * gf_t / dense_th, dense=dense_th, mem=mem, diff=diff)
                    rows.append(row)
                    print(f"{name:8s} {case:6s} {c:4d} {eng.name:15s} {th:3d} {r['kmap']:7.1f} {r['fwd']:8.1f} "
                          f"{r['bwd']:8.1f} {row['total']:8.1f} {gf_f:7.1f} {gf_b:7.1f} {row['pct']:6.1f} "
                          f"{mem:7.1f} {diff:8.1e}", flush=True)
    if os.path.exists(tmp):
        os.remove(tmp)
    summary = _summary(rows, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": _DEVICE, "threads": args.threads, "native": native.status(),
                       "env": {k: os.environ.get(k) for k in list(AVX2_ENV) + ["OMP_WAIT_POLICY"]},
                       "autocast": args.autocast, "rows": rows, "summary": summary}, f, indent=1)


def _summary(rows: list[dict], threads: int) -> dict:
    """The issue's targets, and whether every other row beats correct (1-thread) spconv."""
    def pick(cloud, case, c, engine, th):
        got = [r for r in rows if (r["cloud"], r["case"], r["c"], r["engine"], r["th"]) == (cloud, case, c, engine, th)
               and "error" not in r]
        return got[0] if got else None

    out: dict = {}
    m, sp1, sp2 = pick("room", "subm3", 64, "i2p", threads), pick("room", "subm3", 64, "spconv", 1), \
        pick("room", "subm3", 64, "spconv", 2)
    pure = pick("room", "subm3", 64, "i2p-pure", threads)
    if m:
        out["room_subm3_64"] = {"total_ms": m["total"], "pct_dense": m["pct"]}
        print(f"\ntarget (room, SubMConv 3x3x3 64->64, fwd+bwd+kmap, {threads} threads): {m['total']:.0f} ms, "
              f"{m['pct']:.0f}% of dense GEMM GFLOP/s (goal >= 60%)")
        if pure:
            out["room_subm3_64"]["vs_pure"] = pure["total"] / m["total"]
            print(f"  vs the pure path (I2P_SPARSE_NATIVE=0): {pure['total'] / m['total']:.2f}x faster")
        if sp1:
            out["room_subm3_64"]["vs_spconv1"] = sp1["total"] / m["total"]
            print(f"  vs spconv 1 thread (correct): {sp1['total'] / m['total']:.2f}x faster (goal >= 2x)")
        if sp2:
            out["room_subm3_64"]["vs_spconv2"] = sp2["total"] / m["total"]
            print(f"  vs spconv 2 threads (races, spconv #679): {sp2['total'] / m['total']:.2f}x faster (goal >= 1.5x)")
    beats = []
    for r in rows:
        if r["engine"] != "i2p" or r["th"] != threads or "error" in r:
            continue
        s = pick(r["cloud"], r["case"], r["c"], "spconv", 1)
        if s:
            beats.append((f"{r['cloud']}/{r['case']}/{r['c']}", s["total"] / r["total"]))
    if beats:
        out["vs_spconv1_every_row"] = dict(beats)
        print("  every row vs spconv 1 thread (goal > 1x): " + ", ".join(f"{k} {v:.2f}x" for k, v in beats))
    return out


if __name__ == "__main__":
    main()
