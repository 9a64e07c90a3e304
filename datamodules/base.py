"""``VoxelDataModule``: the one base class every point-cloud data set subclasses.

A new data set overrides two methods (Pointcept style):

- ``list_samples(split) -> list``: the items of ``"train"``, ``"val"`` or ``"test"`` (paths,
  indices, anything picklable);
- ``read_sample(item) -> dict``: ``points`` float [P, 3], ``label`` int (or [P] per point),
  optionally ``colors`` / ``normals`` [P, 3];

and sets ``class_names``. Everything else is here: subsampling to ``num_points``, unit-sphere
normalisation, augmentation, voxelisation, features, collation, seeded few-shot / fraction
subsets, a training order that resumes exactly (``sampling.py``), and samplers that count every
evaluation sample exactly once under DDP.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Sampler

from .dataset import PointCloudDataset, collate_voxels, feature_channels
from .sampling import EpochSampler, ResumableLoader
from .subsets import Episode, episode_classes, episode_indices, few_shot_indices, fraction_indices
from .transforms import Transform, build_transforms
from .voting import vote_views

__all__ = ["SPLITS", "PREPROCESSING", "usable_workers", "VoxelDataModule"]

SPLITS = ("train", "val", "test")
#: the init arguments that decide what a model sees (stored in checkpoints, reused by predict/test)
PREPROCESSING = ("voxel_size", "num_points", "features", "normalize")


def _plain(value: Any) -> bool:
    """Plain data (what a ``weights_only`` checkpoint load and a YAML dump accept)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def usable_workers(num_workers: int) -> int:
    """``num_workers`` capped at the cores this process may use (its CPU affinity, which SLURM and
    containers set): more workers than cores only slow loading down, and torch warns about it.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers > cores:
        rank_zero_info(f"[data] num_workers {num_workers} > {cores} usable cores: using {cores}")
        return cores
    return max(0, int(num_workers))


class VoxelDataModule(pl.LightningDataModule):
    """Voxelised point-cloud batches for classification (and per-point labels).

    Args:
        voxel_size: voxel edge in the units of the (unit-sphere normalised) points; the paper's 0.05.
        num_points: points kept per sample, drawn without replacement when a cloud has more
            (fewer are kept as they are); None keeps all.
        features: voxel features, '+'-joined parts: ``xyz`` (the paper's: coordinates of the
            voxel's representative point), ``ones``, ``rgb``, ``normal``.
        normalize: centre and scale every cloud into the unit sphere before augmentation.
        augmentation: training transforms: ``"paper"``, ``"paper_rotate"``, ``"none"`` or a
            callable ``(sample, rng) -> sample`` (e.g. a ``transforms.Compose``).
        eval_augmentation: transforms at validation/test time (default none).
        batch_size / eval_batch_size: samples per batch (eval defaults to batch_size).
        num_workers: DataLoader worker processes (persistent when > 0).
        few_shot: K training samples per class (seeded by ``few_shot_seed``, default ``seed``).
        train_fraction: keep this fraction of the training set (seeded; per class when
            ``stratified``, see ``subsets.fraction_indices``). Exclusive with ``few_shot``.
        episode: an N-way K-shot episode (``subsets.Episode``, YAML ``{ways: 5, shots: 10, fold: 0}``):
            every split keeps only the episode's classes, relabelled 0..N-1 (``num_classes`` = N),
            training ``shots`` and evaluation ``queries`` per class, seeded by ``few_shot_seed``.
            Exclusive with ``few_shot`` and ``train_fraction``.
        vote_augmentation: the transforms of the extra test-time voting views (``vote_views``):
            ``"vote"`` (per-axis scale U(0.9, 1.1)), ``"vote_rotate"`` (plus a rotation about the up
            axis), another preset or a callable.
        seed: seeds subsets, the training shuffle and augmentation (per sample and epoch, so
            independent of ``num_workers``). None (the default) follows the run's
            ``seed_everything`` (Lightning's ``PL_GLOBAL_SEED``, 0 when unset), so
            ``--seed_everything N`` changes the data side too; an explicit seed pins it.
        drop_last: drop the last incomplete training batch; a last batch of one sample is always
            dropped because BatchNorm cannot train on it.
        class_names: override the data set's class table.
    """

    #: class table of the data set; subclasses set it (or pass ``class_names``).
    class_names: Sequence[str] | None = None
    #: batches the samples (docs/conventions.md); a task with other batch keys swaps it
    collate = staticmethod(collate_voxels)
    #: the voxelising dataset of a split (``dataset``); a task with other sample keys swaps it with ``collate``
    dataset_class: type[PointCloudDataset] = PointCloudDataset
    #: up axis of the data set, used by the ``paper_rotate`` preset.
    up_axis: str = "y"

    def __init__(
        self,
        voxel_size: float = 0.05,
        num_points: int | None = 2048,
        features: str = "xyz",
        normalize: bool = True,
        augmentation: str | Callable | None = "paper",
        eval_augmentation: str | Callable | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        few_shot: int | None = None,
        few_shot_seed: int | None = None,
        train_fraction: float | None = None,
        stratified: bool = True,
        episode: Episode | None = None,
        vote_augmentation: str | Callable | None = "vote",
        seed: int | None = None,
        drop_last: bool = False,
        pin_memory: bool | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        # Every init argument (of the subclass too) goes into checkpoints as Lightning's
        # ``datamodule_hyper_parameters``: the preprocessing `i2p predict` and `i2p test` reuse.
        # Not logged by Lightning (the CLI logs them flattened as ``data/<key>``); plain data only.
        frame = inspect.currentframe()
        self.save_hyperparameters(frame=frame, logger=False)
        objects = [k for k, v in self.hparams.items() if not _plain(v)]
        if objects:  # e.g. a transforms.Compose passed from Python: not storable as plain data
            self.save_hyperparameters(ignore=objects, frame=frame, logger=False)
        del frame
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
        episode = Episode.coerce(episode)
        if sum(x is not None for x in (few_shot, train_fraction, episode)) > 1:
            raise ValueError("few_shot, train_fraction and episode are exclusive: choose one")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.in_channels = feature_channels(features)  # validates features too
        self.voxel_size, self.num_points, self.features, self.normalize = voxel_size, num_points, features, normalize
        self.train_transform: Transform = build_transforms(augmentation, self.up_axis)
        self.eval_transform: Transform = build_transforms(eval_augmentation, self.up_axis)
        self.vote_transform: Transform = build_transforms(vote_augmentation, self.up_axis)
        self.episode = episode
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.drop_last = usable_workers(num_workers), drop_last
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.few_shot, self._few_shot_seed = few_shot, few_shot_seed
        self.train_fraction, self.stratified, self._seed = train_fraction, stratified, seed
        if class_names is not None:
            self.class_names = list(class_names)
        self._items: dict[str, list] = {}
        self._datasets: dict[tuple[str, bool], PointCloudDataset] = {}

    # ------------------------------------------------------------------ what a data set overrides
    def list_samples(self, split: str) -> list:
        """The items of ``split`` ("train", "val" or "test")."""
        raise NotImplementedError(f"{type(self).__name__} must implement list_samples(split)")

    def read_sample(self, item: Any) -> dict:
        """One sample: dict(points [P, 3], label, optional colors/normals)."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_sample(item)")

    def sample_label(self, item: Any) -> int:
        """The class of an item, for few-shot/fraction subsets; override when reading is slow."""
        return int(np.asarray(self.read_sample(item)["label"]).reshape(-1)[0])

    def describe_sample(self, item: Any) -> str:
        """How errors name an item (e.g. its file); override for something better than repr."""
        return f"{type(self).__name__} sample {item!r}"

    # ------------------------------------------------------------------ derived attributes
    @property
    def seed(self) -> int:
        """The data seed: the explicit one, else the run's ``seed_everything`` (``PL_GLOBAL_SEED``)."""
        if self._seed is not None:
            return int(self._seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    @property
    def few_shot_seed(self) -> int:
        """Seed of the few-shot subset: ``few_shot_seed`` when given, else ``seed``."""
        return self.seed if self._few_shot_seed is None else int(self._few_shot_seed)

    def _class_table(self) -> list[str]:
        if self.class_names is None:
            raise ValueError(f"{type(self).__name__} has no class_names: set the class attribute or pass class_names")
        return list(self.class_names)

    @property
    def dataset_num_classes(self) -> int:
        """Size of the data set's class table (what labels on disk index)."""
        return len(self._class_table())

    @property
    def episode_classes(self) -> np.ndarray | None:
        """The data set's class ids an episode keeps (sorted; label i is class ``episode_classes[i]``)."""
        if self.episode is None:
            return None
        return episode_classes(self.dataset_num_classes, self.episode.ways, self.episode.fold, self.few_shot_seed)

    @property
    def num_classes(self) -> int:
        """Number of classes the model predicts: the class table's, or an episode's ways (known
        right after construction).
        """
        return self.dataset_num_classes if self.episode is None else self.episode.ways

    @property
    def target_names(self) -> list[str]:
        """Names of the ``num_classes`` classes the model predicts, in label order."""
        names = self._class_table()
        return names if self.episode is None else [names[c] for c in self.episode_classes]

    # ------------------------------------------------------------------ items and subsets
    def items(self, split: str) -> list:
        """Items of a split, cached; the training split after few-shot / fraction subsetting."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._items:
            items = list(self.list_samples(split))
            if not items:
                raise ValueError(f"{type(self).__name__}: split '{split}' is empty")
            if self.episode is not None:
                labels = np.array([self.sample_label(it) for it in items])
                keep = episode_indices(labels, self.episode, self.few_shot_seed, split, self.dataset_num_classes)
                items = [items[i] for i in keep]
            elif split == "train" and (self.few_shot is not None or self.train_fraction is not None):
                labels = np.array([self.sample_label(it) for it in items])
                if self.few_shot is not None:
                    keep = few_shot_indices(labels, self.few_shot, self.few_shot_seed)
                else:
                    keep = fraction_indices(labels, self.train_fraction, self.seed, self.stratified)
                items = [items[i] for i in keep]
            self._items[split] = items
        return self._items[split]

    def dataset(self, split: str, train: bool | None = None) -> PointCloudDataset:
        """The voxelising dataset of a split; ``train`` (default: split == "train") picks the
        training transforms and per-worker randomness, else the deterministic eval path.
        """
        train = split == "train" if train is None else train
        key = (split, train)
        if key not in self._datasets:
            options = dict(
                read=self.read_sample if self.episode is None else self._read_episode_sample,
                describe=self.describe_sample,
                transform=self.train_transform if train else self.eval_transform,
                voxel_size=self.voxel_size,
                num_points=self.num_points,
                features=self.features,
                normalize=self.normalize,
                num_classes=self.num_classes,
                deterministic=not train,
                seed=self.seed,
            )
            self._datasets[key] = self.dataset_class(self.items(split), **{**options, **self.dataset_options()})
        return self._datasets[key]

    def dataset_options(self) -> dict[str, Any]:
        """Keyword arguments of ``dataset_class`` beyond (or replacing) the shared ones; a task adds its own."""
        return {}

    def _read_episode_sample(self, item: Any) -> dict:
        """A sample with its label mapped to the episode's 0..N-1."""
        sample = self.read_sample(item)
        lookup = np.full(self.dataset_num_classes, -1, np.int64)
        lookup[self.episode_classes] = np.arange(self.episode.ways)
        return {**sample, "label": lookup[np.asarray(sample["label"], np.int64)]}

    def vote_views(self, batch: dict, votes: int) -> list:
        """The extra views of a test batch for test-time voting (view 0 is the batch itself):
        views 1..votes-1 of each sample's points through ``vote_transform``, re-voxelised like
        training data (``datamodules.voting``).
        """
        return vote_views(batch, votes, self.vote_transform, self.voxel_size, self.features, self.seed)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs (each rank; data must already be on disk)."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage or "", SPLITS):
            self.dataset(split)

    # ------------------------------------------------------------------ loaders
    def _distributed(self) -> dict | None:
        """{num_replicas, rank} when running distributed, else None."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            return trainer.distributed_sampler_kwargs
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return {"num_replicas": dist.get_world_size(), "rank": dist.get_rank()}
        return None

    def eval_sampler(self, dataset: PointCloudDataset) -> Sampler | None:
        """Under DDP an unpadded sampler: every sample exactly once across ranks (in order);
        it subclasses DistributedSampler, so Lightning keeps it instead of injecting a padding one.
        """
        dist = self._distributed()
        return None if dist is None else UnrepeatedDistributedSampler(dataset, shuffle=False, **dist)

    def _loader(self, dataset: PointCloudDataset, batch_size: int, seed: int, **kwargs: Any) -> DataLoader:
        cls = ResumableLoader if isinstance(kwargs.get("sampler"), EpochSampler) else DataLoader
        return cls(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            # its own generator: worker seeds never draw from (or advance) the global torch RNG
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )

    def _eval_loader(self, split: str, train: bool = False) -> DataLoader:
        ds = self.dataset(split, train=train)
        return self._loader(ds, self.eval_batch_size, self.seed, shuffle=False, sampler=self.eval_sampler(ds))

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffle per epoch (``EpochSampler``, sharded under DDP), resumable mid-epoch.

        The sampler starts at the epoch the trainer is about to run, so a fit resumed from an
        end-of-epoch checkpoint draws that epoch's order from its first batch on.
        """
        ds = self.dataset("train")
        dist = self._distributed()
        rank, world = (dist["rank"], dist["num_replicas"]) if dist else (0, 1)
        sampler = EpochSampler(ds, num_replicas=world, rank=rank, seed=self.seed)
        sampler.set_epoch(self._next_epoch())
        per_rank = len(sampler)
        drop_last = self.drop_last or (per_rank % self.batch_size == 1 and per_rank > 1)
        return self._loader(ds, self.batch_size, self.seed * 1000 + rank, sampler=sampler, drop_last=drop_last)

    def _next_epoch(self) -> int:
        """The epoch the attached trainer runs next (0 without one): ``epoch_progress.current.processed``,
        the number Lightning itself hands ``set_epoch`` at each epoch start.
        """
        trainer = getattr(self, "trainer", None)
        progress = getattr(getattr(trainer, "fit_loop", None), "epoch_progress", None)
        return int(progress.current.processed) if progress is not None else 0

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def train_eval_dataloader(self) -> DataLoader:
        """The training set (after subsetting) with the eval transforms, in order, unpadded under
        DDP: the pass on which training-set neural-collapse statistics are computed.
        """
        return self._eval_loader("train", train=False)

    # ------------------------------------------------------------------ pickling for spawned workers
    def __getstate__(self) -> dict:
        """Drop the trainer so datasets holding bound methods pickle cheaply into spawned workers."""
        state = self.__dict__.copy()
        for key in ("trainer", "_trainer"):
            if key in state:
                state[key] = None
        return state
