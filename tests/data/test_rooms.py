"""SyntheticRooms and the segmentation DataModule base: seeded scenes, per-point labels through the
voxelisation, the batch keys of docs/conventions.md, the segmentation feature parts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules import SyntheticRooms
from datamodules.rooms import ROOM_CLASSES, generate_room
from tests.helpers.segmentation import tiny_rooms


def test_rooms_are_seeded_labelled_and_coloured():
    a = generate_room(np.random.default_rng([0, 0, 3]), density=30)
    b = generate_room(np.random.default_rng([0, 0, 3]), density=30)
    c = generate_room(np.random.default_rng([0, 0, 4]), density=30)
    np.testing.assert_array_equal(a["points"], b["points"])
    assert len(a["points"]) != len(c["points"]) or not np.array_equal(a["points"], c["points"])
    assert a["points"].shape == a["colors"].shape and a["label"].shape == (len(a["points"]),)
    assert a["colors"].min() >= 0 and a["colors"].max() <= 1
    present = {ROOM_CLASSES[i] for i in np.unique(a["label"])}
    assert {"ceiling", "floor", "wall", "door", "table", "chair", "box"} <= present
    floor, ceiling = a["label"] == ROOM_CLASSES.index("floor"), a["label"] == ROOM_CLASSES.index("ceiling")
    assert abs(a["points"][floor, 2]).max() < 0.05 and a["points"][ceiling, 2].min() > 2.3  # z up


def test_batches_keep_every_point_with_its_label():
    dm = tiny_rooms()
    assert dm.num_classes == 8 and dm.in_channels == 6 and dm.ignore_index == -100
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    rooms = [dm.read_sample(("val", i)) for i in range(2)]
    sizes = [len(r["label"]) for r in rooms]
    assert batch["point_offsets"].tolist() == [0, sizes[0], sizes[0] + sizes[1]]
    torch.testing.assert_close(batch["label"], torch.from_numpy(np.concatenate([r["label"] for r in rooms])))
    x = batch["x"]
    assert batch["voxel_size"] == 0.5 and batch["inverse"].max() == len(x) - 1
    # every point lies in the voxel the inverse map names
    vox = torch.floor(batch["points"] / 0.5).int()
    assert torch.equal(x.coords[batch["inverse"], 1:], vox)
    assert x.feats.shape == (len(x), 6)


def test_feature_parts_and_errors():
    dm = tiny_rooms(features="xyz+rgb+ones")
    assert dm.in_channels == 7
    with pytest.raises(ValueError, match="unknown part"):
        SyntheticRooms(features="xyz+intensity")
    ds = tiny_rooms(features="xyz+remission").dataset("test")
    with pytest.raises(ValueError, match="'remission', which the sample lacks"):
        ds[0]
    with pytest.raises(ValueError, match="few_shot"):
        SyntheticRooms(few_shot=2)
