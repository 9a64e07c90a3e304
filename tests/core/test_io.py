"""i2p.io: OFF (with ModelNet's glued header), point clouds, meshes, h5, label files, errors naming files."""

from pathlib import Path

import numpy as np
import pytest

from i2p import io

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
CUBE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip


def test_off_glued_header_quirk(tmp_path):
    p = tmp_path / "chair_0001.off"
    body = "".join(f"{a} {b} {c}\n" for a, b, c in CUBE_V) + "".join(f"3 {a} {b} {c}\n" for a, b, c in CUBE_F)
    p.write_text("OFF8 12 0\n" + body)
    v, f = io.read_off(p)
    assert v.shape == (8, 3) and f.shape == (12, 3)
    np.testing.assert_array_equal(v, CUBE_V)
    np.testing.assert_array_equal(f, CUBE_F)


def test_off_roundtrip_both_headers_and_polygons(tmp_path):
    for glued in (False, True):
        p = tmp_path / f"m{glued}.off"
        io.write_off(p, CUBE_V, CUBE_F, glued_header=glued)
        assert p.read_text().startswith("OFF8 12 0" if glued else "OFF\n8 12 0")
        v, f = io.read_off(p)
        np.testing.assert_allclose(v, CUBE_V)
        np.testing.assert_array_equal(f, CUBE_F)
    quad = tmp_path / "quad.off"
    quad.write_text("OFF\n# a comment\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    v, f = io.read_off(quad)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])  # fan-triangulated


@pytest.mark.parametrize(
    "text, match",
    [
        ("PLY\n", "not an OFF file"),
        ("OFF\n8 12 0\n0 0 0\n", "truncated"),
        ("OFFx y z\n", "bad OFF header"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n", "out of range"),
        ("OFF\n3 1 0\n0 0 nan\n1 0 0\n0 1 0\n3 0 1 2\n", "NaN/Inf"),
        ("OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", "three numbers"),
    ],
)
def test_off_errors_name_file(tmp_path, text, match):
    p = tmp_path / "broken.off"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        io.read_off(p)
    assert str(p) in str(e.value)
    with pytest.raises(FileNotFoundError, match="nothere.off"):
        io.read_off(tmp_path / "nothere.off")


def test_sample_surface_seeded_on_surface():
    a = io.sample_surface(CUBE_V, CUBE_F, 500, seed=1)
    b = io.sample_surface(CUBE_V, CUBE_F, 500, seed=1)
    c = io.sample_surface(CUBE_V, CUBE_F, 500, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (500, 3)
    on_face = np.isclose(a, 0, atol=1e-6) | np.isclose(a, 1, atol=1e-6)
    assert on_face.any(axis=1).all()  # every point lies on a cube face
    with pytest.raises(ValueError, match="empty.off: mesh has no faces"):
        io.sample_surface(CUBE_V, CUBE_F[:0], 10, seed=0, where="empty.off")


@pytest.mark.parametrize("ext", [".ply", ".pcd", ".npz", ".txt", ".npy"])
def test_point_cloud_roundtrip(tmp_path, ext):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    colors = rng.random((50, 3)).astype(np.float32)
    p = tmp_path / f"cloud{ext}"
    io.write_point_cloud(p, pts, colors=colors)
    out = io.read_point_cloud(p)
    np.testing.assert_allclose(out["points"], pts, atol=1e-5)
    np.testing.assert_allclose(out["colors"], colors, atol=1e-2 if ext in (".ply", ".pcd") else 1e-5)


def test_point_cloud_errors(tmp_path):
    with pytest.raises(ValueError, match="empty point cloud"):
        io.write_point_cloud(tmp_path / "e.npz", np.zeros((0, 3)))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[0, 0, np.inf], [1, 1, 1]]))
    with pytest.raises(ValueError, match="bad.npy.*NaN/Inf"):
        io.read_point_cloud(bad)
    np.save(bad, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"bad.npy.*\[P, 3\+\]"):
        io.read_point_cloud(bad)


def test_mesh_roundtrip_via_open3d(tmp_path):
    p = tmp_path / "cube.ply"
    io.write_mesh(p, CUBE_V, CUBE_F)
    v, f = io.read_mesh(p)
    assert len(v) == 8 and len(f) == 12


def test_h5_read_errors(tmp_path):
    p = tmp_path / "x.h5"
    io.write_h5(p, data=np.zeros((2, 4, 3), np.float32))
    assert io.read_h5(p, ["data"])["data"].shape == (2, 4, 3)
    with pytest.raises(ValueError, match=r"x.h5: field 'label' missing"):
        io.read_h5(p, ["data", "label"])
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match=r"x.h5: cannot read HDF5 file \(truncated or corrupt"):
        io.read_h5(p, ["data"])
    with pytest.raises(FileNotFoundError, match="y.h5"):
        io.read_h5(tmp_path / "y.h5", ["data"])


def test_label_files(tmp_path):
    p = tmp_path / "shape_names.txt"
    io.write_label_file(p, ["airplane", "bathtub"])
    assert io.read_label_file(p) == ["airplane", "bathtub"]
    p.write_text("a\na\n")
    with pytest.raises(ValueError, match="repeats"):
        io.read_label_file(p)
    p.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        io.read_label_file(p)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_follow_the_umask(tmp_path, umask, mode):
    import os

    old = os.umask(umask)
    try:
        io.atomic_write_bytes(tmp_path / "cache.json", b"{}")
        io.write_label_file(tmp_path / "names.txt", ["a"])
    finally:
        os.umask(old)
    assert (tmp_path / "cache.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "names.txt").stat().st_mode & 0o777 == mode


def test_atomic_rewrite_keeps_the_mode_and_never_uses_tmpdir(tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    target = tmp_path / "data" / "x.npz"
    io.atomic_save_npz(target, a=np.zeros(3))
    target.chmod(0o640)
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".npz"  # beside the target: a rename, not a copy
        np.savez(tmp, a=np.ones(3))
    assert target.stat().st_mode & 0o777 == 0o640
    assert list(elsewhere.iterdir()) == [] and io.stale_temp_files(target.parent) == []


def test_stale_temp_files_of_killed_writers(tmp_path):
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "last.ckpt") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("a failure (not a kill) removes its temporary file")
    assert io.stale_temp_files(tmp_path) == []
    import tempfile

    left = [tempfile.mkstemp(dir=tmp_path, prefix=f".{n}.", suffix=f".tmp{Path(n).suffix}")[1]
            for n in ("last.ckpt", "cache.npz")]  # what a SIGKILL mid-write leaves
    (tmp_path / ".hidden").write_text("not ours")
    (tmp_path / "last.ckpt").write_text("a real file")
    assert [p.name for p in io.stale_temp_files(tmp_path, "last.ckpt")] == [Path(left[0]).name]
    assert sorted(map(str, io.remove_stale_temp_files(tmp_path))) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "last.ckpt"]
@pytest.mark.parametrize(
    "text, has",
    [
        ("OFF\n\n# header comment\n8 12 0\n\n", set()),  # blank lines and comments anywhere
        ("COFF\n8 12 0\n", {"colors"}),  # per-vertex RGBA after the coordinates
        ("NOFF\n8 12 0\n", {"normals"}),  # per-vertex normals after the coordinates
        ("CNOFF\n8 12 0\n", {"colors", "normals"}),
        ("nOFF\n3\n8 12 0\n", set()),  # explicit dimension line
        ("4OFF\n8 12 0\n", set()),  # homogeneous coordinates
    ],
)
def test_off_reader_follows_the_specification(tmp_path, text, has):
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(8, 3))
    rgba = rng.integers(0, 256, size=(8, 4))
    lines = []
    for i, v in enumerate(CUBE_V):
        row = [*(v * 2.0), 2.0] if text.startswith("4OFF") else list(v)
        if "normals" in has:
            row += list(normals[i])
        if "colors" in has:
            row += list(rgba[i])
        lines.append(" ".join(map(str, row)) + ("  # vertex comment" if i == 3 else ""))
    faces = [f"3 {a} {b} {c}" + (" 255 0 0" if k % 2 else "") for k, (a, b, c) in enumerate(CUBE_F)]  # face colours
    p = tmp_path / "variant.off"
    p.write_text(text + "\n".join(lines) + "\n\n" + "\n".join(faces) + "\n")
    data = io.read_off_data(p)
    np.testing.assert_allclose(data["vertices"], CUBE_V, atol=1e-6)
    np.testing.assert_array_equal(data["triangles"], CUBE_F)
    assert has == {k for k in ("colors", "normals") if k in data}
    if "normals" in has:
        np.testing.assert_allclose(data["normals"], normals, atol=1e-6)
    if "colors" in has:
        np.testing.assert_allclose(data["colors"], rgba[:, :3] / 255.0, atol=1e-6)


def test_off_point_set_and_bad_variants(tmp_path):
    p = tmp_path / "points.off"
    p.write_text("OFF\n4 0 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n")  # a vertex-only point set
    data = io.read_off_data(p)
    assert data["vertices"].shape == (4, 3) and data["triangles"].shape == (0, 3)
    np.testing.assert_allclose(io.read_point_cloud(p)["points"], data["vertices"])  # its points, as they are
    for text, match in (("OFF BINARY\n", "binary OFF"), ("nOFF\n4\n1 0 0\n0 0 0 0\n", "dimension 4"),
                        ("COFF\n1 0 0\n0 0 0 1 1\n", "RGB or RGBA")):
        p.write_text(text)
        with pytest.raises(ValueError, match=match):
            io.read_off_data(p)


@pytest.mark.parametrize("ext", [".off", ".obj", ".stl", ".ply"])
def test_read_point_cloud_samples_a_mesh_surface(tmp_path, ext):
    p = tmp_path / f"cube{ext}"
    io.write_mesh(p, CUBE_V, CUBE_F)
    a = io.read_point_cloud(p, mesh_points=300, seed=1)["points"]
    assert a.shape == (300, 3)  # sampled on the surface, not the 8 vertices (nor "empty")
    on_face = np.isclose(a, 0, atol=1e-5) | np.isclose(a, 1, atol=1e-5)
    assert on_face.any(axis=1).all()
    np.testing.assert_array_equal(a, io.read_point_cloud(p, mesh_points=300, seed=1)["points"])  # seeded
    assert len(io.read_point_cloud(p)["points"]) == io.MESH_POINTS
    with pytest.raises(ValueError, match=r"cube.foo.*unsupported point-cloud format"):
        (tmp_path / "cube.foo").write_text("x")
        io.read_point_cloud(tmp_path / "cube.foo")
