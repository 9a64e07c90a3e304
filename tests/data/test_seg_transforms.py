"""The scene augmentations: the official S3DIS crop, flip and colour transforms, the KITTI preset."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.transforms import (
    ChromaticAutoContrast,
    ChromaticJitter,
    ChromaticTranslation,
    CropCube,
    RandomFlip,
    build_transforms,
)


def _scene(n=500, extent=(12.0, 5.0, 3.0)):
    rng = np.random.default_rng(0)
    pts = (rng.random((n, 3)) * np.array(extent)).astype(np.float32)
    return {"points": pts, "colors": rng.random((n, 3)).astype(np.float32), "label": np.arange(n)}


def test_crop_cube_keeps_aligned_points_inside_and_leaves_small_rooms():
    s = _scene()
    out = CropCube(8.0)(s, np.random.default_rng(0))
    assert (np.ptp(out["points"], 0) <= 8.0).all() and len(out["points"]) < 500
    np.testing.assert_array_equal(out["points"], s["points"][out["label"]])  # labels follow their points
    np.testing.assert_array_equal(out["colors"], s["colors"][out["label"]])
    small = _scene(extent=(6.0, 5.0, 3.0))
    assert CropCube(8.0)(small, np.random.default_rng(0)) is small


def test_flip_mirrors_the_chosen_axes_and_colours_stay_in_range():
    s = _scene()
    out = RandomFlip(("x", "y"), p=1.0, p_axis=1.0)(s, np.random.default_rng(0))
    np.testing.assert_allclose(out["points"][:, 0], s["points"][:, 0].max() - s["points"][:, 0])
    np.testing.assert_allclose(out["points"][:, 2], s["points"][:, 2])
    rng = np.random.default_rng(1)
    for t in (ChromaticJitter(0.05, p=1), ChromaticTranslation(0.3, p=1), ChromaticAutoContrast(0.5, p=1)):
        c = t(s, rng)["colors"]
        assert c.shape == s["colors"].shape and c.min() >= 0 and c.max() <= 1 and not np.allclose(c, s["colors"])
    with pytest.raises(ValueError, match="colors"):
        ChromaticJitter(p=1)({"points": s["points"]}, rng)


def test_presets():
    s = _scene()
    kitti = build_transforms("semantic_kitti")(s, np.random.default_rng(2))
    r0, r1 = np.linalg.norm(s["points"][:, :2], axis=1), np.linalg.norm(kitti["points"][:, :2], axis=1)
    ratio = r1 / r0  # a rotation about z and one isotropic scale: every horizontal radius scales alike
    assert np.allclose(ratio, ratio[0], rtol=1e-4) and 0.95 <= ratio[0] <= 1.05
    s3dis = build_transforms("s3dis")(s, np.random.default_rng(3))
    assert np.ptp(s3dis["points"], 0).max() <= 8.0
