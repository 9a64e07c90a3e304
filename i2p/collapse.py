"""Neural-collapse statistics from penultimate features, streaming and mergeable across ranks.

Definitions follow docs/collapse.md. Only the sufficient
statistics the metrics need are kept, in float64:

- per class: count ``n_c``, mean ``mu_c`` and the trace of its scatter ``tr M2_c``
  (``sum ||h - mu_c||^2``, for CDNV);
- one pooled within-class scatter ``sum_c M2_c`` (``[D, D]``, for Sigma_W).

Batches and ranks are merged with Chan's parallel update (``M2 = M2_a + M2_b +
delta delta^T n_a n_b / n``), summed over classes; keeping the per-class ``[C, D, D]``
matrices would cost C times the memory and traffic for no metric that needs them. Raw
``E[hh^T] - mu mu^T`` is never formed (it cancels catastrophically for offset features).

NCC needs the *final* class means, so no exact single pass exists. We cache the per-sample
features (``keep_features=True``, float32 on CPU unless given float64: ``N_local x D`` numbers,
e.g. 20 MB for ModelNet40's 9,843 x 512 training features) and compare them with the means
once they are final (after :meth:`CollapseStats.all_reduce` under DDP, only small counts
cross ranks). With ``keep_features=False`` the NCC metrics are NaN.

No Lightning here: plain torch and ``torch.distributed`` (gloo or NCCL).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["CollapseStats", "reduce_and_compute"]

_F64 = torch.float64
# order of the NCC counters: samples, samples with a prediction, NCC correct, NCC != pred, pred correct
_NCC_LEN = 5


class CollapseStats:
    """Streaming accumulator of (features, labels, predictions) for neural-collapse metrics."""

    def __init__(
        self,
        num_classes: int,
        dim: int | None = None,
        keep_features: bool = True,
        ignore_index: int = -100,
        chunk_rows: int = 4096,
    ) -> None:
        self.num_classes = int(num_classes)
        # batches are pooled up to chunk_rows before one exact two-pass + Chan merge: the merge
        # costs O(C D^2) whatever the batch size, so per-batch merges dominate for small batches
        self.chunk_rows = max(1, int(chunk_rows))
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._pending_rows = 0
        self.dim = dim
        self.keep_features = keep_features
        self.ignore_index = ignore_index
        self.device = torch.device("cpu")
        self.counts = torch.zeros(self.num_classes, dtype=_F64)
        self.traces = torch.zeros(self.num_classes, dtype=_F64)
        self.means: Tensor | None = None
        self.scatter: Tensor | None = None
        self._cache: list[tuple[Tensor, Tensor, Tensor | None]] = []
        self._ncc: Tensor | None = None  # NCC counters once reduced across ranks
        self._frozen = False
        if dim is not None:
            self._alloc(dim, self.device)

    # ------------------------------------------------------------------ accumulation
    def _alloc(self, dim: int, device: torch.device) -> None:
        self.dim, self.device = int(dim), device
        self.counts = self.counts.to(device)
        self.traces = self.traces.to(device)
        self.means = torch.zeros(self.num_classes, dim, dtype=_F64, device=device)
        self.scatter = torch.zeros(dim, dim, dtype=_F64, device=device)

    def _check_open(self) -> None:
        if self._frozen:
            raise RuntimeError("CollapseStats already reduced across ranks; start a new one")

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, preds: Tensor | None = None) -> None:
        """Add a batch: ``features [B, D]``, ``labels [B]``, optional predicted classes ``[B]``."""
        self._check_open()
        labels = labels.reshape(-1).long()
        if features.ndim != 2 or features.shape[0] != labels.numel():
            raise ValueError(f"features {tuple(features.shape)} do not match labels {tuple(labels.shape)}")
        keep = (labels != self.ignore_index) & (labels >= 0)
        if not bool(keep.all()):
            features, labels = features[keep], labels[keep]
            preds = None if preds is None else preds.reshape(-1)[keep]
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"label {int(labels.max())} >= num_classes {self.num_classes}")
        if self.means is None:
            self._alloc(features.shape[1], features.device)
        elif features.shape[1] != self.dim:
            raise ValueError(f"feature dim {features.shape[1]} != {self.dim}")
        if labels.numel() == 0:
            return
        if self.keep_features:
            cached = features.detach() if features.dtype == _F64 else features.detach().float()
            p = None if preds is None else preds.detach().reshape(-1).long().cpu()
            self._cache.append((cached.cpu(), labels.cpu(), p))
        self._pending.append((features.detach().to(self.device, _F64), labels.to(self.device)))
        self._pending_rows += labels.numel()
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        """Fold the pending rows in: exact two-pass statistics of the chunk, then Chan's merge."""
        if not self._pending:
            return
        x = torch.cat([p[0] for p in self._pending])
        y = torch.cat([p[1] for p in self._pending])
        self._pending, self._pending_rows = [], 0
        n_b = torch.bincount(y, minlength=self.num_classes).to(_F64)
        sums = torch.zeros_like(self.means).index_add_(0, y, x)
        mean_b = sums / n_b.clamp_min(1)[:, None]
        centred = x - mean_b[y]
        scatter_b = centred.T @ centred
        trace_b = torch.zeros_like(self.traces).index_add_(0, y, centred.square().sum(1))
        self._chan(n_b, mean_b, trace_b, scatter_b)

    def _chan(self, n_b: Tensor, mean_b: Tensor, trace_b: Tensor, scatter_b: Tensor) -> None:
        """Chan's parallel merge of (n_b, mean_b, trace_b, scatter_b) into self, per class."""
        n_a = self.counts
        n = n_a + n_b
        w = torch.where(n > 0, n_a * n_b / n.clamp_min(1), torch.zeros_like(n))
        delta = mean_b - self.means
        self.means = self.means + delta * torch.where(n > 0, n_b / n.clamp_min(1), torch.zeros_like(n))[:, None]
        self.scatter.add_(scatter_b).addmm_((delta * w[:, None]).T, delta)
        self.traces = self.traces + trace_b + w * delta.square().sum(1)
        self.counts = n

    def merge(self, other: CollapseStats) -> CollapseStats:
        """Fold ``other`` (same classes, disjoint samples) into self; returns self."""
        self._check_open()
        other._check_open()
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge statistics over different class counts")
        other._flush()
        if other.means is None:
            return self
        if self.means is None:
            self._alloc(other.dim, other.device)
        d = self.device
        self._chan(other.counts.to(d), other.means.to(d), other.traces.to(d), other.scatter.to(d))
        self._cache.extend(other._cache)
        self.keep_features = self.keep_features and other.keep_features
        return self

    # ------------------------------------------------------------------ distributed
    def all_reduce(self, group: dist.ProcessGroup | None = None) -> CollapseStats:
        """Merge every rank's statistics in place (collective: call on all ranks); returns self.

        Multi-part Chan update via all-reduce: global class means from summed ``n_c mu_c``,
        then each rank adds ``n_rc delta delta^T`` (its offset from the global mean) to its
        scatter before the sum. NCC counters are computed locally against the final means and
        summed, so cached features never cross ranks. Afterwards the object is frozen (a second
        call returns at once).
        """
        if self._frozen:
            return self
        self._flush()
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            self._ncc, self._frozen = self._ncc_counts(), True
            return self
        backend = str(dist.get_backend(group))
        comm = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")
        dim = torch.tensor([self.dim or 0], device=comm)
        dist.all_reduce(dim, op=dist.ReduceOp.MAX, group=group)
        if int(dim) == 0:  # no rank saw any data
            self._ncc, self._frozen = torch.zeros(_NCC_LEN, dtype=_F64), True
            return self
        if self.means is None:
            self._alloc(int(dim), self.device)
        elif self.dim != int(dim):
            raise ValueError(f"feature dim differs across ranks ({self.dim} vs {int(dim)})")
        C, D = self.num_classes, self.dim
        n_r, mean_r = self.counts.to(comm), self.means.to(comm)
        first = torch.cat([n_r, (mean_r * n_r[:, None]).reshape(-1)])
        dist.all_reduce(first, group=group)
        n = first[:C]
        mean = first[C:].reshape(C, D) / n.clamp_min(1)[:, None]
        delta = mean_r - mean
        scatter = self.scatter.to(comm) + (delta * n_r[:, None]).T @ delta
        traces = self.traces.to(comm) + n_r * delta.square().sum(1)
        second = torch.cat([traces, scatter.reshape(-1)])
        dist.all_reduce(second, group=group)
        self.counts, self.means = n.to(self.device), mean.to(self.device)
        self.traces, self.scatter = second[:C].to(self.device), second[C:].reshape(D, D).to(self.device)
        local = self._ncc_counts()
        have = torch.tensor([float(local is not None)], dtype=_F64, device=comm)
        dist.all_reduce(have, op=dist.ReduceOp.MIN, group=group)
        ncc = torch.zeros(_NCC_LEN, dtype=_F64) if local is None else local
        ncc = ncc.to(comm)
        dist.all_reduce(ncc, group=group)
        self._ncc = ncc.cpu() if bool(have.item()) else torch.full((_NCC_LEN,), math.nan, dtype=_F64)
        self._frozen = True
        return self

    # ------------------------------------------------------------------ metrics
    def _ncc_counts(self) -> Tensor | None:
        """[samples, with pred, NCC correct, NCC != pred, pred correct] from the cached features."""
        if self._ncc is not None:
            return self._ncc
        self._flush()
        if not self.keep_features:
            return None
        out = torch.zeros(_NCC_LEN, dtype=_F64)
        if self.means is None or not self._cache:
            return out
        present = (self.counts > 0).nonzero().flatten().cpu()
        mu = self.means.cpu()[present]
        mu_g = mu.mean(0)  # centre first: cdist's matmul path would cancel on offset features
        for f, y, p in self._cache:
            nearest = present[torch.cdist(f.to(_F64) - mu_g, mu - mu_g).argmin(1)]
            out[0] += y.numel()
            out[2] += (nearest == y).sum()
            if p is not None:
                out[1] += p.numel()
                out[3] += (nearest != p).sum()
                out[4] += (p == y).sum()
        return out

    def class_means(self) -> Tensor | None:
        """Class means ``[C, D]`` (rows of absent classes are zero)."""
        self._flush()
        return self.means

    @torch.no_grad()
    def compute(self, classifier_weight: Tensor | None = None) -> dict[str, float]:
        """All metrics as floats; NaN where undefined (fewer than two classes, no predictions).

        Keys: ``nc1``, ``cdnv``, ``ncc_mismatch``, ``ncc_accuracy``, ``net_accuracy``,
        ``nc2_norm_cv`` (std/mean of ||mu_c - mu_G||), ``nc2_cos_std`` (std of pairwise cosines
        of centred means), ``nc2_etf_dev`` (mean |cos + 1/(C-1)|), ``nc3`` (with
        ``classifier_weight [num_classes, D]``), ``tr_sw``, ``tr_sb``, ``num_samples``,
        ``classes_present``, ``classes_absent``. Stds are population stds. C counts present
        classes only; absent ones are left out of every mean. Absent class ids: :meth:`absent`.
        """
        self._flush()
        nan = math.nan
        out = dict.fromkeys(
            ["nc1", "cdnv", "nc2_norm_cv", "nc2_cos_std", "nc2_etf_dev", "nc3", "tr_sw", "tr_sb"], nan
        )
        counts = self.counts.cpu()
        present = counts > 0
        C, N = int(present.sum()), float(counts.sum())
        out.update(num_samples=N, classes_present=float(C), classes_absent=float(self.num_classes - C))
        ncc = self._ncc_counts()
        if ncc is None or ncc[0] == 0:
            out.update(ncc_accuracy=nan, ncc_mismatch=nan, net_accuracy=nan)
        else:
            with_pred = float(ncc[1])
            out["ncc_accuracy"] = float(ncc[2] / ncc[0])
            out["ncc_mismatch"] = float(ncc[3]) / with_pred if with_pred else nan
            out["net_accuracy"] = float(ncc[4]) / with_pred if with_pred else nan
        if C == 0:
            return out
        mu = self.means.cpu()[present]
        centred = mu - mu.mean(0)  # mu_c - mu_G, mu_G = mean of class means
        sigma_w = self.scatter.cpu() / N
        out["tr_sw"] = float(sigma_w.diagonal().sum())
        out["tr_sb"] = float(centred.square().sum() / C)
        if C < 2:
            return out
        out["nc1"] = _nc1(sigma_w, centred)
        var = self.traces.cpu()[present] / counts[present]
        d2 = _pairwise_sq_dist(centred)
        iu = torch.triu_indices(C, C, offset=1)
        out["cdnv"] = float(((var[:, None] + var[None, :]) / (2 * d2))[iu[0], iu[1]].mean())
        norms = centred.norm(dim=1)
        out["nc2_norm_cv"] = float(norms.std(correction=0) / norms.mean())
        unit = centred / norms.clamp_min(torch.finfo(_F64).tiny)[:, None]
        cos = (unit @ unit.T)[iu[0], iu[1]]
        out["nc2_cos_std"] = float(cos.std(correction=0))
        out["nc2_etf_dev"] = float((cos + 1.0 / (C - 1)).abs().mean())
        if classifier_weight is not None:
            w = classifier_weight.detach().cpu().to(_F64)
            if w.shape != (self.num_classes, self.dim):
                raise ValueError(f"classifier weight {tuple(w.shape)} != ({self.num_classes}, {self.dim})")
            w = w[present]
            out["nc3"] = float((w / w.norm() - centred / centred.norm()).norm())
        return out

    def absent(self) -> list[int]:
        """Ids of the classes with no sample."""
        self._flush()
        return (self.counts.cpu() == 0).nonzero().flatten().tolist()


def _nc1(sigma_w: Tensor, centred: Tensor) -> float:
    """Tr(Sigma_W Sigma_B^+)/C through the thin SVD of the centred means (rank <= C - 1).

    Sigma_B = M^T M / C with M = U S V^T, so Sigma_B^+ = C V S^-2 V^T and
    Tr(Sigma_W Sigma_B^+)/C = sum_k v_k^T Sigma_W v_k / s_k^2 -- no D x D inverse, works for D < C.
    The structural null direction is dropped by rank (C - 1), not by tolerance: on offset
    features its singular value is eps * ||mu|| noise, not zero, and would blow up NC1.
    """
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = s > s.max() * max(centred.shape) * torch.finfo(_F64).eps
    keep[centred.shape[0] - 1 :] = False  # centring makes rank <= C-1; the last one is rounding noise
    v = vh[keep]
    return float(((v @ sigma_w) * v).sum(1).div(s[keep].square()).sum())


def _pairwise_sq_dist(x: Tensor, chunk: int = 64) -> Tensor:
    """Exact ||x_i - x_j||^2 (differences, not the cancelling Gram identity), row-chunked."""
    rows = [(x[i : i + chunk, None, :] - x[None, :, :]).square().sum(-1) for i in range(0, len(x), chunk)]
    return torch.cat(rows)


def reduce_and_compute(
    stats: CollapseStats, classifier_weight: Tensor | None = None, group: dist.ProcessGroup | None = None
) -> dict[str, float]:
    """All-reduce ``stats``, compute, and broadcast rank 0's values so every rank holds the same floats.

    Collective when distributed: every rank must call it (deadlock otherwise).
    """
    stats.all_reduce(group)
    result = stats.compute(classifier_weight)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return result
    backend = str(dist.get_backend(group))
    comm = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend else torch.device("cpu")
    keys = sorted(result)
    values = torch.tensor([result[k] for k in keys], dtype=_F64, device=comm)
    src = dist.get_global_rank(group, 0) if group is not None else 0
    dist.broadcast(values, src=src, group=group)
    return dict(zip(keys, values.cpu().tolist()))
