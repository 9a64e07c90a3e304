"""The N-way K-shot episode protocol: seeded classes per fold, shots and queries, relabelling in the DataModule."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from datamodules.subsets import Episode, episode_classes, episode_indices
from tests.helpers.classifier import tiny_data

LABELS = np.repeat(np.arange(12), 10)  # 12 classes, 10 samples each


def test_same_fold_and_seed_same_classes_other_folds_differ():
    a = episode_classes(12, 5, fold=3, seed=0)
    assert np.array_equal(a, episode_classes(12, 5, fold=3, seed=0))
    assert len(a) == 5 and len(set(a.tolist())) == 5 and np.all(np.diff(a) > 0) and a.max() < 12
    folds = [tuple(episode_classes(12, 5, fold=f, seed=0)) for f in range(10)]
    assert len(set(folds)) > 5  # ten folds, (12 choose 5) = 792 possible sets: folds differ
    assert any(tuple(episode_classes(12, 5, fold=f, seed=1)) != folds[f] for f in range(10))  # the seed matters


def test_episode_indices_shots_and_queries_of_the_episode_classes():
    ep = Episode(ways=4, shots=3, fold=2, queries=5)
    classes = episode_classes(12, 4, 2, seed=7)
    train = episode_indices(LABELS, ep, seed=7, split="train", num_classes=12)
    test = episode_indices(LABELS, ep, seed=7, split="test", num_classes=12)
    assert sorted(np.unique(LABELS[train])) == sorted(classes) == sorted(np.unique(LABELS[test]))
    assert np.all(np.bincount(LABELS[train], minlength=12)[classes] == 3)
    assert np.all(np.bincount(LABELS[test], minlength=12)[classes] == 5)
    assert np.array_equal(train, episode_indices(LABELS, ep, seed=7, split="train", num_classes=12))
    other_shots = episode_indices(LABELS, Episode(4, 3, fold=3, queries=5), seed=7, split="train", num_classes=12)
    assert not np.array_equal(train, other_shots)
    everything = episode_indices(LABELS, Episode(4, 3, 2, queries=None), seed=7, split="test", num_classes=12)
    assert len(everything) == 40  # queries None: every test shape of the 4 classes
    with pytest.warns(UserWarning, match="only 10 samples"):
        assert len(episode_indices(LABELS, Episode(4, 11, 2), seed=7, split="train", num_classes=12)) == 40


def test_episode_validation():
    with pytest.raises(ValueError, match="ways"):
        Episode(ways=1, shots=1)
    with pytest.raises(ValueError, match="queries"):
        Episode(ways=2, shots=1, queries=0)
    with pytest.raises(ValueError, match="unknown fields"):
        Episode.coerce({"ways": 2, "shots": 1, "way": 3})
    with pytest.raises(ValueError, match="12 classes"):
        episode_classes(12, 13, 0, 0)


def test_datamodule_episode_relabels_every_split():
    classes = ["sphere", "torus", "table", "arrow", "cuboid", "cylinder"]
    dm = tiny_data(classes=classes, num_train=60, num_val=30, num_test=30,
                   episode={"ways": 3, "shots": 2, "fold": 1, "queries": 4}, few_shot_seed=5)
    kept = episode_classes(6, 3, 1, seed=5)
    assert dm.num_classes == 3 and dm.dataset_num_classes == 6
    assert dm.target_names == [classes[c] for c in kept]
    assert dm.class_names == classes  # the data set's table is untouched
    for split, per_class in (("train", 2), ("val", 4), ("test", 4)):
        ds = dm.dataset(split)
        labels = [int(ds[i]["label"]) for i in range(len(ds))]
        assert sorted(labels) == sorted(list(range(3)) * per_class), split
        raw = [dm.sample_label(it) for it in dm.items(split)]
        assert sorted(set(raw)) == sorted(kept.tolist())
        assert all(labels[i] == kept.tolist().index(raw[i]) for i in range(len(raw)))  # label i = kept[i]


def test_datamodule_episode_exclusive_with_few_shot():
    with pytest.raises(ValueError, match="exclusive"):
        tiny_data(few_shot=2, episode={"ways": 2, "shots": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny_data().num_classes == 4 and tiny_data().target_names == tiny_data().class_names
