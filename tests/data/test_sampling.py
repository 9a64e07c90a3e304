"""The training order resumes exactly: a pure function of (seed, epoch), sharded like DistributedSampler,
a loader that restarts mid-epoch on the batches an uninterrupted one would have drawn, whatever the
workers; the data seed follows seed_everything unless pinned.
"""

import pytest
import torch
from torch.utils.data import DistributedSampler

from datamodules.sampling import Draw, EpochSampler, ResumableLoader
from tests.data.test_datamodules import dm


def test_order_is_a_function_of_seed_and_epoch():
    data = range(20)
    order = lambda seed, epoch: EpochSampler(data, seed=seed).indices(epoch)  # noqa: E731
    assert order(0, 3) == order(0, 3) and sorted(order(0, 3)) == list(range(20))
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)
    assert order(1, 0) != order(0, 1)  # not seed + epoch (DistributedSampler's), which aliases seeds


def test_shards_pad_like_distributed_sampler_and_yield_draws():
    shards = [EpochSampler(range(11), num_replicas=3, rank=r, seed=5) for r in range(3)]
    assert all(isinstance(s, DistributedSampler) for s in shards)  # so Lightning does not inject its own
    assert [len(s) for s in shards] == [4, 4, 4]
    seen = [d.index for s in shards for d in s]
    assert sorted(set(seen)) == list(range(11)) and len(seen) == 12  # one sample repeated as padding
    for s in shards:
        s.set_epoch(2)
        assert all(d == Draw(d.index, 2) for d in s)


def test_resume_at_skips_once():
    s = EpochSampler(range(10), seed=1)
    full = [d.index for d in s]
    s.resume_at(0, 4)
    assert [d.index for d in s] == full[4:]
    assert [d.index for d in s] == full  # the skip is spent
    s.resume_at(0, 4)
    s.set_epoch(1)  # another epoch: the skip does not apply
    assert [d.index for d in s] == s.indices(1)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_mid_epoch_on_the_same_batches(workers):
    def loader(epoch):
        d = dm(n=30, batch_size=4, num_workers=workers, seed=3)
        dl = d.train_dataloader()
        dl.sampler.set_epoch(epoch)
        return dl

    uninterrupted = loader(2)
    assert isinstance(uninterrupted, ResumableLoader)
    batches, it = [], iter(uninterrupted)
    for _ in range(3):
        batches.append(next(it))
    state = uninterrupted.state_dict()
    assert (state["epoch"], state["batches"]) == (2, 3)
    batches += list(it)

    resumed = loader(2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(batches) - 3
    for a, b in zip(rest, batches[3:]):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["points"], b["points"])
    assert resumed.state_dict()["batches"] == len(batches)
    # a state of an epoch that is over does not touch the next one
    nxt = loader(3)
    nxt.load_state_dict(state)
    assert torch.equal(next(iter(nxt))["index"], next(iter(loader(3)))["index"])


def test_augmentation_does_not_depend_on_workers():
    a = [b["points"] for b in dm(n=12, batch_size=4, num_workers=0, seed=4).train_dataloader()]
    b = [b["points"] for b in dm(n=12, batch_size=4, num_workers=2, seed=4).train_dataloader()]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_data_seed_follows_seed_everything_unless_pinned(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    one = dm(n=60, few_shot=2).items("train")
    order_one = dm(n=60).train_dataloader().sampler.indices(0)
    monkeypatch.setenv("PL_GLOBAL_SEED", "2")
    two = dm(n=60, few_shot=2).items("train")
    assert one != two  # seeds 1 and 2 pick different few-shot subsets ...
    assert dm(n=60).train_dataloader().sampler.indices(0) != order_one  # ... and orders
    assert dm(n=60, few_shot=2, seed=1).items("train") == one  # an explicit data seed pins them
    assert dm(n=60, few_shot=2, few_shot_seed=1).items("train") == one
    assert dm(n=60, seed=7).seed == 7
