"""Optional compiled kernels (C + OpenMP, loaded with ctypes) for float32 convolution on CPU.

One C source (`csrc/gemm_pairs.c`) compiled per instruction set with explicit flags — AVX-512
(`-mavx512f -mavx2 -mfma`), AVX2 + FMA (`-mavx2 -mfma`), ARM64 NEON — never `-march=native`, so a
cache shared by several machines (an NFS home) never hands one CPU another's code. The variant is
chosen at run time from the CPU's features (`/proc/cpuinfo`): the widest the CPU has. Anything
missing — not Linux, no C compiler, no OpenMP, a CPU with none of these, a failed build,
`I2P_SPARSE_NATIVE=0` — leaves `lib()` returning None and the engine on its pure PyTorch path,
which is also the tests' oracle; `status()` says which and why.

Build and cache (safe to share between processes and users' machines):
- built on first use with the system compiler (`$CC`, else `cc`/`gcc`), with one notice on stderr;
  no Python or torch headers, so a build takes about a second;
- cached under `$I2P_CACHE/sparse` (default `~/.cache/i2p/sparse`), keyed by the source, the
  compiler (path and `--version`) and the flags;
- each `.so` has a sidecar `.sha256` written atomically after the library was moved into place;
  a library is loaded only if its bytes hash to the sidecar (checked on the open file, which is
  then loaded through `/proc/self/fd`, so what was checked is what is loaded), else rebuilt;
- builds go to a temporary file in the cache directory and are renamed into place, so no
  process ever sees a half-written library.

`I2P_SPARSE_ISA=avx512|avx2|neon|generic` forces a variant (refused if the CPU lacks it);
`generic` is plain C, slower than the pure path, and only there to test the blocking logic.
In a process that imported torch the kernels run on torch's own OpenMP runtime (same
`libgomp.so.1`), so they share its thread pool and `torch.set_num_threads`.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ISAS", "NativeLib", "cpu_features", "supported_isas", "default_isa", "lib", "status", "usable",
           "build", "conv_forward", "conv_backward", "groups_for"]

_SOURCE = Path(__file__).with_name("csrc") / "gemm_pairs.c"

#: instruction-set variants, widest first, with their compiler flags
ISAS: dict[str, list[str]] = {
    "avx512": ["-DI2P_ISA_AVX512", "-mavx512f", "-mavx2", "-mfma"],
    "avx2": ["-DI2P_ISA_AVX2", "-mavx2", "-mfma"],
    "neon": ["-DI2P_ISA_NEON"],
    "generic": [],
}
_BASE_FLAGS = ["-O3", "-fopenmp", "-fPIC", "-shared", "-fno-strict-aliasing"]
# features each variant needs (x86: /proc/cpuinfo `flags`; ARM64: `Features`)
_NEEDS = {"avx512": {"avx512f", "avx2", "fma"}, "avx2": {"avx2", "fma"}, "neon": {"asimd"}, "generic": set()}
_ARCH = {"avx512": "x86_64", "avx2": "x86_64", "neon": "aarch64", "generic": None}


@dataclass
class NativeLib:
    """A loaded variant: the ctypes handle, its ISA, and where it lives."""
    cdll: ctypes.CDLL
    isa: str
    path: Path


_loaded: dict[str, NativeLib | None] = {}
_reasons: dict[str, str] = {}
_announced: set[str] = set()


def _machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


@functools.cache
def cpu_features() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty when unknown); read once: every conv asks."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def supported_isas() -> list[str]:
    """Variants this CPU can run, widest first (`generic` always last)."""
    feats, arch = cpu_features(), _machine()
    out = [isa for isa in ("avx512", "avx2", "neon")
           if _ARCH[isa] == arch and (_NEEDS[isa] <= feats or (isa == "neon" and arch == "aarch64"))]
    return out + ["generic"]


def default_isa() -> str | None:
    """The variant `lib()` uses: `I2P_SPARSE_ISA` when set, else the widest SIMD one (None: none)."""
    forced = os.environ.get("I2P_SPARSE_ISA", "").strip().lower()
    if forced and forced != "auto":
        return forced
    simd = [i for i in supported_isas() if i != "generic"]
    return simd[0] if simd else None


def _cache_dir() -> Path:
    root = os.environ.get("I2P_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "i2p")
    return Path(root) / "sparse"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc and not os.path.isabs(cc):
        cc = shutil.which(cc) or cc
    return cc


def _compiler_id(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return cc + "\n" + (out.splitlines()[0] if out else "")


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _notice(msg: str) -> None:
    if msg not in _announced:
        _announced.add(msg)
        print(f"i2p.sparse: {msg}", file=sys.stderr, flush=True)


def build(isa: str, cc: str | None = None, cache: Path | None = None, extra_flags: list[str] | None = None
          ) -> tuple[Path | None, str]:
    """Compile variant `isa` into the cache (or find it there): `(path, "")`, or `(None, reason)`.

    The returned library's bytes match its `.sha256` sidecar at the time of the call.
    """
    cc = cc or _compiler()
    if cc is None:
        return None, "no C compiler (set $CC, or install gcc)"
    if not _SOURCE.exists():
        return None, f"kernel source {_SOURCE} missing"
    flags = _BASE_FLAGS + ISAS[isa] + list(extra_flags or [])
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + b"\0" + _compiler_id(cc).encode() + b"\0" + " ".join(flags).encode()).hexdigest()[:20]
    cache = cache or _cache_dir()
    target = cache / f"gemm_pairs-{isa}-{key}.so"
    sidecar = target.with_name(target.name + ".sha256")
    if _verified(target, sidecar):
        return target, ""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / f".{target.name}.lock", "w")
    except OSError as err:
        return None, f"cache directory {cache} not writable ({err})"
    with lock:  # one builder at a time (DDP ranks start together); the others then find its result
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _verified(target, sidecar):
            return target, ""
        return _compile(cc, flags, isa, target, sidecar)


def _compile(cc: str, flags: list[str], isa: str, target: Path, sidecar: Path) -> tuple[Path | None, str]:
    cache = target.parent
    _notice(f"building the {isa} kernels (once per compiler and source, ~1 s) into {cache}; "
            "set I2P_SPARSE_NATIVE=0 to use the pure PyTorch path instead")
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=cache)
    os.close(fd)
    try:
        res = subprocess.run([cc, *flags, str(_SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            tail = " ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            return None, f"{Path(cc).name} failed to build the {isa} kernels: {tail[:300]}"
        with open(tmp, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        os.replace(tmp, target)  # atomic: readers see the old file or the whole new one
        _atomic_write(sidecar, (digest + "\n").encode())
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"building the {isa} kernels failed: {err}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target, ""


def _verified(target: Path, sidecar: Path) -> bool:
    try:
        want = sidecar.read_text().strip()
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _sha256_fd(fd) == want
    finally:
        os.close(fd)


def _load(path: Path, isa: str) -> NativeLib | None:
    """Dlopen the library after checking its hash on the same open file (no swap in between)."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        want = sidecar.read_text().strip()
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _sha256_fd(fd) != want:
            os.close(fd)
            return None
        # the fd stays open for the process's life: the dynamic loader knows libraries by name, and
        # a reused /proc/self/fd/N would hand back the variant loaded before under that number
        cdll = ctypes.CDLL(f"/proc/self/fd/{fd}")
    except OSError:
        os.close(fd)
        return None
    cdll.i2p_isa.restype = ctypes.c_char_p
    if cdll.i2p_isa().decode() != isa:
        return None
    p, i64, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    cdll.conv_forward.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, i64, cint]
    cdll.conv_forward.restype = None
    cdll.conv_backward.argtypes = [p, p, p, p, p, p, p, p, p, i64, i64, i64, i64, i64, p, cint]
    cdll.conv_backward.restype = None
    cdll.conv_wgrad.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, i64, cint]
    cdll.conv_wgrad.restype = None
    return NativeLib(cdll, isa, path)


def lib(isa: str | None = None) -> NativeLib | None:
    """The compiled variant `isa` (default: `default_isa()`), or None; built once per process."""
    if os.environ.get("I2P_SPARSE_NATIVE", "1").strip() == "0":
        _reasons["*"] = "disabled by I2P_SPARSE_NATIVE=0"
        return None
    isa = isa or default_isa()
    if isa is None:
        _reasons["*"] = (f"the CPU ({_machine()}) has neither AVX2 + FMA, AVX-512 nor NEON: the pure path is as "
                         "fast as plain C there")
        return None
    if isa in _loaded:
        return _loaded[isa]
    out, reason = None, ""
    if isa not in ISAS:
        reason = f"unknown I2P_SPARSE_ISA={isa!r} (choose from {', '.join(ISAS)})"
    elif platform.system() != "Linux":
        reason = f"compiled kernels are built on Linux only (this is {platform.system()})"
    elif isa not in supported_isas():
        reason = f"the CPU lacks {isa} (it has: {', '.join(supported_isas())})"
    else:
        path, reason = build(isa)
        if path is not None:
            out = _load(path, isa)
            if out is None:  # a stale or foreign file: rebuild once
                try:
                    path.unlink()
                except OSError:
                    pass
                path, reason = build(isa)
                out = _load(path, isa) if path is not None else None
                if out is None and not reason:
                    reason = f"the {isa} library in {path.parent} failed its hash check or did not load"
    _loaded[isa] = out
    _reasons[isa] = reason
    return out


def status(isa: str | None = None) -> str:
    """One line: the variant in use, or the real reason there is none (for skips and logs)."""
    lb = lib(isa)
    if lb is not None:
        return f"compiled {lb.isa} kernels ({lb.path})"
    if os.environ.get("I2P_SPARSE_NATIVE", "1").strip() == "0" or (isa or default_isa()) is None:
        return _reasons["*"]
    return _reasons.get(isa or default_isa()) or "unavailable"


def usable(*tensors: torch.Tensor) -> bool:
    """True when the compiled path applies: float32, CPU, contiguous, a library available."""
    if not all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in tensors):
        return False
    return lib() is not None


# at most this many float32 partial weight gradients (groups × offsets × cin × cout) in the backward
SCRATCH_BYTES = 64 << 20
MAX_GROUPS = 16
# below this many tile groups the weight gradient is split by columns instead (conv_wgrad)
MIN_GROUPS = 4


def groups_for(plan, cin: int, cout: int) -> int:
    """Tile groups of the fused weight-gradient sum: a function of the shapes only (never of the threads).

    Capped by memory (`SCRATCH_BYTES`) and by work: each group's partials cost `offsets·cin·cout`
    adds, worth it only over at least 32 pairs per offset.
    """
    per = max(1, plan.n * cin * cout * 4)
    return max(1, min(MAX_GROUPS, plan.ntiles, SCRATCH_BYTES // per, plan.pairs // max(1, 32 * plan.n)))


def conv_forward(lb: NativeLib, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, plan) -> None:
    """out[o] += x[i] @ w[k] over the pairs of `plan` (`KernelMap.tiled_pairs(True)`), in place."""
    lb.cdll.conv_forward(x.data_ptr(), w.data_ptr(), out.data_ptr(), plan.in_ptrs.data_ptr(),
                         plan.out_ptrs.data_ptr(), plan.seg.data_ptr(), plan.wk.data_ptr(), plan.n, plan.ntiles,
                         x.shape[1], w.shape[2], torch.get_num_threads())


def conv_backward(lb: NativeLib, x: torch.Tensor, go: torch.Tensor, wt: torch.Tensor | None,
                  gx: torch.Tensor | None, gw: torch.Tensor | None, plan) -> None:
    """In place over `plan` (`KernelMap.tiled_pairs(False)`): gw[k] += x[i]ᵀ go[o], gx[i] += go[o] @ wt[k].

    One fused pass with per-group partial weight gradients when there are pairs enough for
    `MIN_GROUPS` groups; else (wide layers, few pairs) the input gradient alone, then the weight
    gradient split by output columns. Either way the result does not depend on the threads.
    """
    cin, cout = x.shape[1], go.shape[1]
    th = torch.get_num_threads()
    ng = groups_for(plan, cin, cout)
    split = gw is not None and ng < MIN_GROUPS
    fused_gw = None if split else gw
    if gx is not None or fused_gw is not None:
        scratch = x.new_empty(ng * plan.n * cin * cout) if fused_gw is not None else None
        lb.cdll.conv_backward(x.data_ptr(), go.data_ptr(), None if wt is None else wt.data_ptr(),
                              None if gx is None else gx.data_ptr(), None if fused_gw is None else fused_gw.data_ptr(),
                              plan.in_ptrs.data_ptr(), plan.out_ptrs.data_ptr(), plan.seg.data_ptr(),
                              plan.wk.data_ptr(), plan.n, plan.ntiles, ng, cin, cout,
                              None if scratch is None else scratch.data_ptr(), th)
    if split:
        lb.cdll.conv_wgrad(x.data_ptr(), go.data_ptr(), gw.data_ptr(), plan.in_ptrs.data_ptr(),
                           plan.out_ptrs.data_ptr(), plan.seg.data_ptr(), plan.wk.data_ptr(), plan.n, plan.ntiles,
                           cin, cout, th)
