"""Seeded subsets of a training set: K shots per class, or a (stratified) fraction.

Both return sorted positions into the label array, so the subset keeps the data set's order and
the same seed always picks the same samples.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["few_shot_indices", "fraction_indices"]


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
