"""Test-time voting views: a test batch's points transformed again and re-voxelised.

The classifier averages its logits over view 0 (the batch as loaded) and ``votes - 1`` views made
here, so voting needs only the batch (``points``, ``point_offsets``, ``label``, ``index``) and the
DataModule's voxel settings. Each view's randomness is seeded by ``(seed, sample index, view)``,
so a sample gets the same views whatever batch, worker or rank it is in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .dataset import collate_voxels, parse_features, voxelize_sample
from .transforms import Transform

__all__ = ["VOTE_FEATURES", "vote_views"]

#: feature parts a view can recompute from the transformed points alone
VOTE_FEATURES = ("xyz", "ones")


def vote_views(batch: dict, votes: int, transform: Transform, voxel_size: float, features: str | Sequence[str],
               seed: int = 0) -> list:
    """Views 1..``votes``-1 of ``batch`` as SparseTensors on the batch's device (empty for ``votes`` = 1)."""
    if votes < 1:
        raise ValueError(f"test_votes must be >= 1, got {votes}")
    parts = parse_features(features) if isinstance(features, str) else list(features)
    if votes > 1 and any(p not in VOTE_FEATURES for p in parts):
        raise ValueError(f"test-time voting re-voxelises batch['points'] alone, which carries no colours or normals: "
                         f"features {'+'.join(parts)!r} are not supported (use {' / '.join(VOTE_FEATURES)})")
    points = batch["points"].detach().cpu().numpy()
    offsets = batch["point_offsets"].tolist()
    labels, index = batch["label"].cpu(), batch["index"].tolist()
    device = batch["x"].feats.device
    views = []
    for view in range(1, votes):
        samples = []
        for b, i in enumerate(index):
            rng = np.random.default_rng([seed, i, view, 0x707E])
            sample = transform({"points": points[offsets[b]:offsets[b + 1]], "label": labels[b]}, rng)
            samples.append(voxelize_sample(sample, i, voxel_size, parts, f"vote view {view} of sample {i}"))
        views.append(collate_voxels(samples)["x"].to(device))
    return views
