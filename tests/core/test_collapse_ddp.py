"""Two gloo processes on uneven shards report exactly what one process reports on all the data."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from i2p.collapse import CollapseStats, reduce_and_compute


def _data():
    g = torch.Generator().manual_seed(11)
    C, D = 7, 5  # D < C - 1: the rank-deficient case as well
    y = torch.randint(0, C - 1, (150,), generator=g)  # class 6 absent everywhere
    h = torch.randn(C, D, generator=g)[y] * 4 + torch.randn(150, D, generator=g) + 1e3
    p = torch.randint(0, C, (150,), generator=g)
    w = torch.randn(C, D, generator=g)
    return C, h, y, p, w


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    C, h, y, p, w = _data()
    # rank 0 gets 100 samples in batches of 9, rank 1 gets 50 (and rank 1 misses class 0 entirely)
    idx = torch.arange(100) if rank == 0 else torch.arange(100, 150)
    if rank == 1:
        idx = idx[y[idx] != 0]
    elif rank == 0:
        idx = torch.cat([idx, torch.arange(100, 150)[y[100:] == 0]])
    s = CollapseStats(C, chunk_rows=1)
    for i in range(0, len(idx), 9):
        j = idx[i : i + 9]
        s.update(h[j], y[j], p[j])
    torch.save(reduce_and_compute(s, classifier_weight=w), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_two_gloo_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    C, h, y, p, w = _data()
    one = CollapseStats(C)
    one.update(h, y, p)
    ref = one.compute(classifier_weight=w)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0 == r1 or all(math.isnan(r0[k]) and math.isnan(r1[k]) or r0[k] == r1[k] for k in r0)
    assert r0["num_samples"] == 150 and r0["classes_absent"] == 1
    for k, v in ref.items():
        assert math.isclose(r0[k], v, rel_tol=1e-9, abs_tol=1e-12), (k, r0[k], v)
