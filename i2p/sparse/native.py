"""Optional compiled kernels (C + OpenMP, loaded with ctypes) for float32 convolution on CPU.

Built on first use (x86-64 with AVX-512 only; elsewhere the pure path is as fast) with the system C compiler into a per-user cache, keyed by the source, the
compiler and the CPU's flags (the build uses `-march=native`). Anything missing — no compiler,
no OpenMP, a failed build, `I2P_SPARSE_NATIVE=0` — leaves `lib()` returning None and the engine
on its pure PyTorch path, which is also the tests' oracle. No Python headers or torch headers
are needed, so a build takes about a second. In a process that imported torch the kernels run
on torch's own OpenMP runtime (same `libgomp.so.1`), so they share its thread pool and
`torch.set_num_threads`.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

_SOURCE = Path(__file__).with_name("csrc") / "gemm_pairs.c"
_lib: Optional[ctypes.CDLL] = None
_tried = False


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("I2P_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "i2p")
    return Path(root) / "sparse"


def _build() -> Optional[ctypes.CDLL]:
    if os.environ.get("I2P_SPARSE_NATIVE", "1") == "0" or platform.system() != "Linux":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or not _SOURCE.exists():
        return None
    src = _SOURCE.read_bytes()
    for flags in (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"]):
        key = hashlib.sha256(src + " ".join([cc] + flags).encode() + _cpu_signature().encode()).hexdigest()[:16]
        target = _cache_dir() / f"gemm_pairs_{key}.so"
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
                os.close(fd)
                res = subprocess.run([cc, *flags, "-shared", "-fPIC", str(_SOURCE), "-o", tmp],
                                     capture_output=True, timeout=120)
                if res.returncode != 0:
                    os.unlink(tmp)
                    continue
                os.replace(tmp, target)  # atomic: concurrent builders agree
            except (OSError, subprocess.SubprocessError):
                continue
        try:
            lib = ctypes.CDLL(str(target))
        except OSError:
            continue
        lib.has_avx512.restype = ctypes.c_int
        if not lib.has_avx512():  # scalar loops would not beat the pure PyTorch path
            continue
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.pairs_gemm_scatter.argtypes = [p, p, p, p, p, i64, i64, i64, ctypes.c_int]
        lib.pairs_gemm_scatter.restype = None
        lib.pairs_backward.argtypes = [p, p, p, p, p, p, p, i64, i64, i64, p, ctypes.c_int]
        lib.pairs_backward.restype = None
        return lib
    return None


def lib() -> Optional[ctypes.CDLL]:
    """The compiled library, or None (built once per process, cached on disk)."""
    global _lib, _tried
    if not _tried:
        _tried = True
        _lib = _build()
    return _lib


def usable(*tensors: torch.Tensor) -> bool:
    """True when the compiled path applies: float32, CPU, contiguous, library available."""
    if not all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in tensors):
        return False
    return lib() is not None


def gemm_scatter(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, in_idx: torch.Tensor,
                 out_idx: torch.Tensor) -> None:
    """out[out_idx] += x[in_idx] @ w (no duplicate in out_idx), in place."""
    lib().pairs_gemm_scatter(x.data_ptr(), w.data_ptr(), out.data_ptr(), in_idx.data_ptr(), out_idx.data_ptr(),
                             in_idx.numel(), x.shape[1], w.shape[1], torch.get_num_threads())


def backward(x: torch.Tensor, go: torch.Tensor, wt: torch.Tensor, gx: Optional[torch.Tensor],
             gw: Optional[torch.Tensor], in_idx: torch.Tensor, out_idx: torch.Tensor, scratch: torch.Tensor) -> None:
    """In place: gw += x[in_idx]ᵀ go[out_idx] and gx[in_idx] += go[out_idx] @ wt (either may be None)."""
    lib().pairs_backward(x.data_ptr(), go.data_ptr(), wt.data_ptr(), None if gx is None else gx.data_ptr(),
                         None if gw is None else gw.data_ptr(), in_idx.data_ptr(), out_idx.data_ptr(),
                         in_idx.numel(), x.shape[1], go.shape[1], scratch.data_ptr(), torch.get_num_threads())
