"""The training order as a pure function of ``(seed, epoch)``, and a loader that can stop and go on.

A fit killed at any batch must resume with exactly the batches, in the same order and with the same
augmentation, that an uninterrupted fit would have drawn. So nothing about the data depends on
state that lives in worker processes or on how many batches were prefetched:

- ``EpochSampler`` shuffles with a generator seeded by ``(seed, epoch)`` (not ``seed + epoch``,
  which would make seed 1's epoch 0 equal seed 0's epoch 1), pads and shards like
  ``DistributedSampler`` (so Lightning keeps it under DDP instead of injecting its own), and
  yields ``Draw(index, epoch)``: the dataset derives each sample's augmentation generator from
  ``(seed, epoch, index)``, whatever worker or rank loads it.
- ``ResumableLoader`` counts the batches it handed out this epoch and offers Lightning the
  ``state_dict`` / ``load_state_dict`` pair of a stateful loader, which Lightning saves with each
  checkpoint and restores on a mid-epoch restart: the sampler then skips the batches already
  trained on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any, NamedTuple

import numpy as np
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["Draw", "EpochSampler", "ResumableLoader"]


class Draw(NamedTuple):
    """What the training sampler yields: the dataset index and the epoch it is drawn in."""

    index: int
    epoch: int


class EpochSampler(DistributedSampler):
    """Seeded shuffle per ``(seed, epoch)``, this rank's share of it, yielding ``Draw`` items.

    Like ``DistributedSampler`` (``drop_last=False``): the permutation is padded with its head
    to a multiple of ``num_replicas`` and rank ``r`` takes every ``num_replicas``-th entry from
    ``r``. ``resume_at(epoch, skip)`` makes the next iteration of that epoch start after ``skip``
    entries (once).
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        # not super().__init__: it would query torch.distributed, and the arguments are all known here
        self.dataset, self.num_replicas, self.rank, self.seed = dataset, num_replicas, rank, int(seed)
        self.shuffle, self.drop_last, self.epoch = True, False, 0
        self.num_samples = -(-len(dataset) // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self._skip: tuple[int, int] | None = None

    def indices(self, epoch: int) -> list[int]:
        """This rank's dataset indices of ``epoch``, in order."""
        order = np.random.default_rng([self.seed, epoch, 0x5A3D]).permutation(len(self.dataset))
        if self.total_size > len(order):
            order = np.resize(order, self.total_size)  # pad by repeating from the head
        return order[self.rank : self.total_size : self.num_replicas].tolist()

    def resume_at(self, epoch: int, skip: int) -> None:
        """Start the next iteration of ``epoch`` after its first ``skip`` entries."""
        self.set_epoch(epoch)
        self._skip = (epoch, int(skip))

    def __iter__(self) -> Iterator[Draw]:
        start = 0
        if self._skip is not None:
            epoch, skip = self._skip
            self._skip = None
            if epoch == self.epoch:
                start = skip
        epoch = self.epoch
        return iter([Draw(i, epoch) for i in self.indices(epoch)[start:]])

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an ``EpochSampler`` that knows where it stands within the epoch.

    ``state_dict()`` -> ``{"epoch", "batches", ...}`` (batches handed out so far this epoch);
    ``load_state_dict()`` makes the next epoch-``epoch`` iteration skip those batches. Lightning
    calls both (its stateful-loader protocol) when it checkpoints and when it restarts mid-epoch.
    """

    def __init__(self, dataset: Any, sampler: EpochSampler, **kwargs: Any) -> None:
        if kwargs.get("shuffle"):
            raise ValueError("ResumableLoader: the EpochSampler shuffles; do not pass shuffle=True")
        kwargs.pop("shuffle", None)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._epoch, self._batches = sampler.epoch, 0

    def __iter__(self) -> Iterator[Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        skip = sampler._skip
        start = skip[1] // self.batch_size if skip is not None and skip[0] == sampler.epoch else 0
        iterator = super().__iter__()
        self._epoch, self._batches = sampler.epoch, start
        return self._counting(iterator)

    def _counting(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        return {"epoch": self._epoch, "batches": self._batches, "batch_size": self.batch_size,
                "num_replicas": sampler.num_replicas, "dataset_size": len(sampler.dataset), "seed": sampler.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if epoch != sampler.epoch:  # the checkpoint's epoch is over: the fit goes on with the next one
            return
        saved = {k: state.get(k) for k in ("batch_size", "num_replicas", "dataset_size", "seed")}
        now = {"batch_size": self.batch_size, "num_replicas": sampler.num_replicas,
               "dataset_size": len(sampler.dataset), "seed": sampler.seed}
        changed = {k: (saved[k], now[k]) for k in now if saved[k] is not None and saved[k] != now[k]}
        if changed:
            rank_zero_warn(f"resuming mid-epoch {epoch} after {batches} batches, but the data settings changed "
                           f"since the checkpoint ({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}): "
                           "the rest of this epoch is not the one the interrupted run would have seen")
        sampler.resume_at(epoch, batches * int(self.batch_size or 1))
        self._epoch, self._batches = epoch, batches
