"""CollapseStats against direct computations from the definitions in docs/collapse.md."""

import math

import pytest
import torch

from i2p.collapse import CollapseStats, reduce_and_compute


def reference(h: torch.Tensor, y: torch.Tensor, preds=None, weight=None) -> dict:
    """Textbook formulas: explicit class means, covariances, D x D pseudo-inverse, loops over pairs."""
    h = h.double()
    classes = sorted(set(y.tolist()))
    C = len(classes)
    mu = torch.stack([h[y == c].mean(0) for c in classes])
    mu_g = mu.mean(0)
    D = h.shape[1]
    sw = torch.zeros(D, D, dtype=torch.float64)
    for i in range(len(h)):
        d = h[i] - mu[classes.index(int(y[i]))]
        sw += torch.outer(d, d)
    sw /= len(h)
    sb = sum(torch.outer(m - mu_g, m - mu_g) for m in mu) / C
    out = {"nc1": float(torch.trace(sw @ torch.linalg.pinv(sb)) / C)}
    var = [float(((h[y == c] - mu[k]) ** 2).sum(1).mean()) for k, c in enumerate(classes)]
    cd, cos = [], []
    for i in range(C):
        for j in range(i + 1, C):
            cd.append((var[i] + var[j]) / (2 * float(((mu[i] - mu[j]) ** 2).sum())))
            a, b = mu[i] - mu_g, mu[j] - mu_g
            cos.append(float(a @ b / (a.norm() * b.norm())))
    out["cdnv"] = sum(cd) / len(cd)
    cos = torch.tensor(cos, dtype=torch.float64)
    out["nc2_cos_std"] = float(cos.std(correction=0))
    out["nc2_etf_dev"] = float((cos + 1 / (C - 1)).abs().mean())
    norms = (mu - mu_g).norm(dim=1)
    out["nc2_norm_cv"] = float(norms.std(correction=0) / norms.mean())
    nearest = torch.tensor([classes[int(((mu - x) ** 2).sum(1).argmin())] for x in h])
    out["ncc_accuracy"] = float((nearest == y).double().mean())
    if preds is not None:
        out["ncc_mismatch"] = float((nearest != preds).double().mean())
    if weight is not None:
        w = weight.double()[classes]
        m = mu - mu_g
        out["nc3"] = float((w / w.norm() - m / m.norm()).norm())
    return out


def make_data(n_per_class, dim, spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = len(n_per_class)
    centres = torch.randn(C, dim, generator=g, dtype=torch.float64) * 3
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    h = centres[y] + spread * torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(y), generator=g)
    preds = torch.randint(0, C, (len(y),), generator=g)
    return h[perm], y[perm], preds[perm]


def close(a: dict, b: dict, rtol=1e-9):
    for k, v in b.items():
        same = math.isnan(v) and math.isnan(a[k]) or math.isclose(a[k], v, rel_tol=rtol, abs_tol=1e-12)
        assert same, (k, a[k], v)


@pytest.mark.parametrize("sizes,dim", [([30, 5, 17, 2, 40], 8), ([9, 3, 12, 6, 4, 7, 5, 8, 11, 2], 4)])
def test_matches_definitions_unequal_sizes(sizes, dim):
    """Unequal classes; the second case has D=4 < C=10, so Sigma_B is rank-deficient."""
    h, y, p = make_data(sizes, dim)
    w = torch.randn(len(sizes), dim, dtype=torch.float64)
    s = CollapseStats(len(sizes))
    s.update(h, y, p)
    got = s.compute(classifier_weight=w)
    close(got, reference(h, y, p, w))
    assert got["num_samples"] == len(y) and got["classes_present"] == len(sizes)
    assert math.isclose(got["net_accuracy"], float((p == y).double().mean()))


def test_collapsed_and_scrambled():
    C, D = 6, 16
    mu = torch.randn(C, D, dtype=torch.float64) * 5
    y = torch.arange(C).repeat(20)
    s = CollapseStats(C)
    s.update(mu[y] + 1e-9 * torch.randn(len(y), D, dtype=torch.float64), y, y.clone())
    r = s.compute()
    assert r["nc1"] < 1e-12 and r["cdnv"] < 1e-12
    assert r["ncc_mismatch"] == 0 and r["ncc_accuracy"] == 1
    scrambled = CollapseStats(C)
    scrambled.update(torch.randn(len(y), D, dtype=torch.float64), y, y.clone())
    r2 = scrambled.compute()
    assert r2["nc1"] > 1.0 and r2["cdnv"] > 1.0 and r2["ncc_mismatch"] > 0.3


def test_simplex_etf_gives_zero_nc2_nc3():
    C = 5
    etf = torch.eye(C, dtype=torch.float64) - 1.0 / C  # centred simplex, rows equinorm
    y = torch.arange(C).repeat(3)
    s = CollapseStats(C)
    s.update(etf[y], y, y)
    r = s.compute(classifier_weight=2 * etf)
    assert r["nc2_norm_cv"] < 1e-12 and r["nc2_cos_std"] < 1e-12 and r["nc2_etf_dev"] < 1e-12
    assert r["nc3"] < 1e-12


def test_streaming_and_merge_equal_one_batch():
    h, y, p = make_data([50, 20, 33, 7], 12, seed=3)
    whole = CollapseStats(4)
    whole.update(h, y, p)
    ref = whole.compute()
    stream = CollapseStats(4, chunk_rows=1)  # every batch merged with Chan's update
    for i in range(0, len(y), 7):
        stream.update(h[i : i + 7], y[i : i + 7], p[i : i + 7])
    close(stream.compute(), ref, rtol=1e-10)
    a, b = CollapseStats(4, chunk_rows=1), CollapseStats(4, chunk_rows=30)
    a.update(h[:40], y[:40], p[:40])
    b.update(h[40:], y[40:], p[40:])
    close(a.merge(b).compute(), ref, rtol=1e-10)


def test_float64_large_offset_where_naive_fails():
    """Offset 1e8 with unit spread: E[hh^T] - mu mu^T loses everything; Chan keeps it."""
    h, y, p = make_data([40, 40, 40], 4, seed=5)
    offset = 1e8
    shifted = h + offset
    s = CollapseStats(3, chunk_rows=1)
    for i in range(0, len(y), 16):
        s.update(shifted[i : i + 16], y[i : i + 16], p[i : i + 16])
    got, ref = s.compute(), reference(h, y, p)
    close(got, {k: ref[k] for k in ("nc1", "cdnv", "ncc_accuracy", "ncc_mismatch")}, rtol=1e-6)
    # the naive formula on the same data is badly wrong: this is what the test guards against
    mask = y == 0
    naive = (shifted[mask].T @ shifted[mask]) / mask.sum() - torch.outer(shifted[mask].mean(0), shifted[mask].mean(0))
    exact = torch.cov(h[mask].T, correction=0)
    assert (naive - exact).abs().max() > 0.1
    assert (s.traces[0] / s.counts[0] - exact.trace()).abs() < 1e-6


def test_absent_classes_reported_not_divided_by_zero():
    h, y, p = make_data([10, 12, 9], 5, seed=7)
    y = torch.tensor([0, 2, 5])[y]  # classes 1, 3, 4 absent out of 6
    s = CollapseStats(6)
    w = torch.randn(6, 5, dtype=torch.float64)
    s.update(h, y, p)
    r = s.compute(classifier_weight=w)
    assert r["classes_present"] == 3 and r["classes_absent"] == 3 and s.absent() == [1, 3, 4]
    close(r, reference(h, y, p, w))
    assert all(math.isfinite(v) for v in r.values())


def test_degenerate_inputs_are_nan_not_errors():
    s = CollapseStats(4, dim=3)
    r = s.compute()
    assert r["num_samples"] == 0 and math.isnan(r["nc1"]) and math.isnan(r["ncc_accuracy"])
    s.update(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))  # one class, no preds
    r = s.compute()
    assert math.isnan(r["nc1"]) and math.isnan(r["ncc_mismatch"]) and r["ncc_accuracy"] == 1.0
    ignored = CollapseStats(2)
    ignored.update(torch.randn(4, 3), torch.tensor([0, -100, 1, -100]))
    assert ignored.compute()["num_samples"] == 2
    with pytest.raises(ValueError):
        ignored.update(torch.randn(2, 3), torch.tensor([0, 2]))


def test_no_feature_cache_gives_nan_ncc_only():
    h, y, p = make_data([10, 10, 10], 4)
    s = CollapseStats(3, keep_features=False)
    s.update(h, y, p)
    r = s.compute()
    assert math.isnan(r["ncc_mismatch"]) and math.isfinite(r["nc1"])
    assert not s._cache


def test_single_process_reduce_is_identity():
    h, y, p = make_data([10, 14, 6], 4)
    s = CollapseStats(3)
    s.update(h, y, p)
    ref = s.compute()
    close(reduce_and_compute(s), ref)
    with pytest.raises(RuntimeError):
        s.update(h, y, p)
