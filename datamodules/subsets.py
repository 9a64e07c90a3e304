"""Seeded subsets of a data set: K shots per class, a (stratified) fraction, or an N-way K-shot episode.

All return sorted positions into the label array, so the subset keeps the data set's order and
the same seed always picks the same samples.

Two few-shot protocols, whose numbers are not comparable (docs/experiments.md):

- the paper's (``few_shot_indices``): K training shapes of *every* class, the full test set;
- the episodes of the Point-BERT / ACT line (``Episode``): N classes drawn per fold, K training
  shapes of each, tested on (``queries`` per class of) those classes' test shapes, labels 0..N-1.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["few_shot_indices", "fraction_indices", "Episode", "episode_classes", "episode_indices"]

#: split -> stream id of an episode's draws (val and test draw their queries independently)
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def few_shot_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` samples per class drawn without replacement; a class with fewer keeps all (with a warning)."""
    if k < 1:
        raise ValueError(f"few_shot must be >= 1 samples per class, got {k}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, k])
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < k:
            warnings.warn(f"few_shot={k}: class {c} has only {len(members)} training samples; using all of them")
            picked.append(members)
        else:
            picked.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def fraction_indices(labels: np.ndarray, fraction: float, seed: int, stratified: bool = True) -> np.ndarray:
    """A seeded ``fraction`` of the samples.

    Stratified: ``max(1, round(fraction * n_c))`` from every class c, so class balance is kept
    and no class vanishes. Not stratified: ``max(1, round(fraction * n))`` drawn uniformly.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
    if not stratified:
        n = max(1, int(round(fraction * len(labels))))
        return np.sort(rng.choice(len(labels), n, replace=False))
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, max(1, int(round(fraction * len(members)))), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot episode: ``ways`` classes drawn for ``fold`` (and the seed), ``shots``
    training shapes of each, ``queries`` evaluation shapes of each (None: all of them).

    The classes depend on (seed, ways, fold) only, so the 10- and 20-shot episodes of a fold share
    their classes; the shapes depend on (seed, ways, shots, fold, split). Point-BERT's episodes
    take 20 queries per class.
    """

    ways: int
    shots: int
    fold: int = 0
    queries: int | None = 20

    def __post_init__(self) -> None:
        if self.ways < 2:
            raise ValueError(f"episode ways must be >= 2 classes, got {self.ways}")
        if self.shots < 1:
            raise ValueError(f"episode shots must be >= 1 per class, got {self.shots}")
        if self.fold < 0:
            raise ValueError(f"episode fold must be >= 0, got {self.fold}")
        if self.queries is not None and self.queries < 1:
            raise ValueError(f"episode queries must be >= 1 per class or null (all), got {self.queries}")

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: Episode | Mapping | None) -> Episode | None:
        """An ``Episode`` from itself, a dict of its fields (YAML, CLI) or None."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"ways", "shots", "fold", "queries"}
            if unknown:
                raise ValueError(f"episode: unknown fields {sorted(unknown)}; expected ways, shots, fold, queries")
            return cls(**value)
        raise TypeError(f"episode must be an Episode or a dict of its fields, got {type(value).__name__}")


def episode_classes(num_classes: int, ways: int, fold: int, seed: int) -> np.ndarray:
    """The sorted class ids of episode ``fold``: ``ways`` of ``num_classes`` drawn without replacement."""
    if ways > num_classes:
        raise ValueError(f"episode of {ways} ways from a data set of {num_classes} classes")
    rng = np.random.default_rng([seed, ways, fold, 0xE715])
    return np.sort(rng.choice(num_classes, ways, replace=False))


def episode_indices(labels: np.ndarray, episode: Episode, seed: int, split: str, num_classes: int) -> np.ndarray:
    """Positions of the episode's samples of one split: ``shots`` per class for ``"train"``,
    ``queries`` per class (all when None) otherwise; a class with fewer keeps all (with a warning).
    """
    labels = np.asarray(labels)
    classes = episode_classes(num_classes, episode.ways, episode.fold, seed)
    k = episode.shots if split == "train" else episode.queries
    rng = np.random.default_rng([seed, episode.ways, episode.shots, episode.fold, _SPLIT_STREAM[split]])
    picked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            raise ValueError(f"episode fold {episode.fold}: class {c} has no {split} samples")
        if k is not None and len(members) > k:
            members = rng.choice(members, k, replace=False)
        elif k is not None and len(members) < k:
            warnings.warn(f"episode {split}: class {c} has only {len(members)} samples for {k}; using all of them")
        picked.append(members)
    return np.sort(np.concatenate(picked))
