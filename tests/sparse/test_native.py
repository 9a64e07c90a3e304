"""The compiled kernels: every ISA variant against the pure path, the build cache, ARM64 emulated.

The cache's safety: hash-checked, atomic, one notice, opt-out.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from i2p.sparse import Conv3d, native
from i2p.sparse.backends import i2p_backend
from tests.helpers.sparse import random_sparse

# (cin, cout, k, stride, transposed, grid size): the small grids take the column-split weight gradient,
# the size-20 ones (over 4 tiles of 1024 rows) the fused pass with per-group partials
CASES = [(64, 64, 3, 1, False, 8), (5, 70, 3, 1, False, 8), (33, 128, 2, 2, False, 8), (64, 16, 3, 2, False, 8),
         (7, 3, 1, 1, False, 8), (16, 40, 2, 2, True, 8), (24, 8, 3, 2, True, 8), (16, 24, 3, 1, False, 20),
         (16, 16, 3, 2, True, 20), (256, 256, 3, 1, False, 8), (136, 200, 3, 2, False, 8)]  # wide: AVX-512 runs them


@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _run(conv, x, impl, lb=None):
    """(out, grad feats, grad kernel) of a weighted sum of the outputs, through `impl` (and variant `lb`)."""
    saved = native.lib
    if lb is not None:
        native.lib = lambda isa=None: lb
    try:
        with i2p_backend.force_impl(impl):
            f = x.feats.clone().requires_grad_(True)
            conv.kernel.grad = None
            y = conv(x.replace(f))
            (y.feats * torch.linspace(-1, 1, y.feats.numel()).view_as(y.feats)).sum().backward()
    finally:
        native.lib = saved
    return y.feats.detach(), f.grad, conv.kernel.grad.clone()


def _layer(cin, cout, k, s, transposed, seed, size=8):
    density = 0.5 if size > 8 else 0.35
    x = random_sparse(batch=2, size=size, channels=cin, dtype=torch.float32, seed=seed, density=density)
    if transposed:  # come back up from the level a strided conv made
        x = Conv3d(cin, cin, 2, stride=2)(x).detach()
    return x, Conv3d(cin, cout, k, stride=s, transposed=transposed)


@pytest.mark.slow
@pytest.mark.parametrize("isa", list(native.ISAS))
def test_isa_variant_matches_pure_path(isa, two_threads):
    """Each variant (forced, whatever the CPU would pick) equals the pure loop, fwd and bwd."""
    lb = native.lib(isa)
    if lb is None:
        pytest.skip(f"{isa}: {native.status(isa)}")
    assert lb.isa == isa
    paths = set()
    for i, (cin, cout, k, s, tr, size) in enumerate(CASES):
        x, conv = _layer(cin, cout, k, s, tr, seed=i, size=size)
        got = _run(conv, x, "native", lb)
        ref = _run(conv, x, "loop")
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        kmap = [m for key, m in x.cache.kmaps.items() if key[1] == conv.kernel_size][0]
        kmap = kmap.transposed() if tr else kmap
        paths.add(native.groups_for(kmap.tiled_pairs(False), cin, cout) >= native.MIN_GROUPS)
    assert paths == {True, False}  # both weight-gradient paths ran


def test_default_variant_is_the_widest_the_cpu_has():
    sup = native.supported_isas()
    assert sup[-1] == "generic"
    if os.environ.get("I2P_SPARSE_ISA", "auto") in ("", "auto"):
        simd = [i for i in sup if i != "generic"]
        assert native.default_isa() == (simd[0] if simd else None)
    flags = native.cpu_features()
    if {"avx512f", "avx2", "fma"} <= flags:
        assert "avx512" in sup and "avx2" in sup
    if "avx2" not in flags:
        assert "avx2" not in sup


def test_status_names_the_real_reason(monkeypatch):
    monkeypatch.setenv("I2P_SPARSE_NATIVE", "0")
    assert native.lib() is None and "I2P_SPARSE_NATIVE=0" in native.status()
    monkeypatch.delenv("I2P_SPARSE_NATIVE")
    other = "neon" if native._machine() == "x86_64" else "avx2"
    assert native.lib(other) is None and f"lacks {other}" in native.status(other)


def test_native_is_deterministic(two_threads):
    """Same inputs, same bits.

    Each output row belongs to one thread and the weight gradient is summed over groups of tiles fixed
    by the shapes, not by the schedule.
    """
    if native.lib() is None:
        pytest.skip(native.status())
    x = random_sparse(batch=2, size=12, channels=16, dtype=torch.float32, seed=3, density=0.5)
    conv = Conv3d(16, 24, 3)
    a, b = _run(conv, x, "native"), _run(conv, x, "native")
    for u, v in zip(a, b):
        assert torch.equal(u, v)


# --- the build cache ----------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    if native._compiler() is None:
        pytest.skip("no C compiler (set $CC, or install gcc)")
    monkeypatch.setattr(native, "_cache_dir", lambda: tmp_path)
    monkeypatch.setattr(native, "_announced", set())
    return tmp_path


@pytest.mark.slow
def test_build_announces_once_and_writes_a_verified_library(cache, capfd):
    path, reason = native.build("generic")
    assert path is not None, reason
    err = capfd.readouterr().err
    assert err.count("i2p.sparse: building the generic kernels") == 1 and "I2P_SPARSE_NATIVE=0" in err
    sidecar = path.with_name(path.name + ".sha256")
    import hashlib
    assert sidecar.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
    again, _ = native.build("generic")
    assert again == path and capfd.readouterr().err == ""  # cached: no second notice, no rebuild
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # no half-written leftovers
    lb = native._load(path, "generic")
    assert lb is not None and lb.isa == "generic"


@pytest.mark.slow
def test_cache_key_covers_the_flags(cache):
    a, _ = native.build("generic")
    b, _ = native.build("generic", extra_flags=["-DI2P_CACHE_KEY_TEST=1"])
    assert a != b and a.exists() and b.exists()


@pytest.mark.slow
def test_tampered_or_unverified_library_is_refused_and_rebuilt(cache):
    path, _ = native.build("generic")
    good = path.read_bytes()
    path.write_bytes(good + b"\0garbage")  # e.g. a torn or foreign file with the right name
    assert native._load(path, "generic") is None
    rebuilt, _ = native.build("generic")
    assert rebuilt == path and native._load(path, "generic") is not None
    path.with_name(path.name + ".sha256").unlink()  # no sidecar: never trusted
    assert native._load(path, "generic") is None


@pytest.mark.slow
def test_opt_out_in_a_fresh_process(tmp_path):
    env = dict(os.environ, I2P_SPARSE_NATIVE="0", I2P_CACHE=str(tmp_path))
    code = "from i2p.sparse import native; print(native.lib() is None, native.status())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True disabled by I2P_SPARSE_NATIVE=0")
    assert "building" not in out.stderr and not list(tmp_path.iterdir())


# --- ARM64 ----------------------------------------------------------------------------------------

CROSS = shutil.which("aarch64-linux-gnu-gcc")
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
SRC = Path(native.__file__).with_name("csrc")


@pytest.mark.slow
@pytest.mark.skipif(CROSS is None, reason="no aarch64 cross compiler (apt-get install gcc-aarch64-linux-gnu)")
def test_neon_variant_cross_compiles(tmp_path):
    flags = native._BASE_FLAGS + native.ISAS["neon"]
    res = subprocess.run([CROSS, *flags, str(SRC / "gemm_pairs.c"), "-o", str(tmp_path / "neon.so")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "neon.so").read_bytes()[:4] == b"\x7fELF"


@pytest.mark.slow
@pytest.mark.skipif(CROSS is None or QEMU is None or not Path("/usr/aarch64-linux-gnu").exists(),
                    reason="no aarch64 cross compiler or qemu-user (apt-get install gcc-aarch64-linux-gnu qemu-user)")
def test_neon_variant_is_correct_under_emulation(tmp_path):
    """The C self-test (the kernels against naive loops) built for NEON and run under qemu-aarch64."""
    exe = tmp_path / "selftest"
    res = subprocess.run([CROSS, "-O2", "-fopenmp", *native.ISAS["neon"], str(SRC / "selftest.c"), "-o", str(exe),
                          "-lm"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, QEMU_LD_PREFIX="/usr/aarch64-linux-gnu"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("isa neon, vector width 4") and run.stdout.rstrip().endswith("ok")


@pytest.mark.slow
def test_selftest_passes_for_the_host_variants(tmp_path):
    """The same C self-test natively, for every variant this CPU runs (catches a broken tile)."""
    cc = native._compiler()
    if cc is None:
        pytest.skip("no C compiler (set $CC, or install gcc)")
    for isa in native.supported_isas():
        exe = tmp_path / f"selftest_{isa}"
        res = subprocess.run([cc, "-O2", "-fopenmp", *native.ISAS[isa], str(SRC / "selftest.c"), "-o", str(exe),
                              "-lm"], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and f"isa {isa}" in run.stdout, run.stdout
