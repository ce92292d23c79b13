"""The cubic B-spline field and the shared query interface."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from helpers import gaussian_blobs, hot_voxel_map, shared_file

from neural_em.errors import InputError
from neural_em.fields import SplineDensityMap, load_field
from neural_em.voxelmap import VoxelMap, read_map


@pytest.fixture(scope="module")
def field() -> SplineDensityMap:
    rng = np.random.default_rng(0)
    data = scipy.ndimage.gaussian_filter(rng.random((20, 22, 24)), 2).astype(np.float32)
    return SplineDensityMap.from_voxel_data(data, voxel_size=(1.1, 0.9, 1.3), origin=(5, -3, 2))


def _random_inside(field, n, seed=1):
    lo, hi = field.bounds
    return lo + np.random.default_rng(seed).random((n, 3)) * (hi - lo)


def test_interpolates_voxels_exactly(field):
    vmap = VoxelMap(data=field.volume, voxel_size=field.voxel_size, origin=field.origin)
    pts = vmap.grid_points()
    np.testing.assert_allclose(field.get_densities(pts), field.volume.ravel(), atol=2e-6)


def test_matches_scipy_map_coordinates(field):
    pts = _random_inside(field, 2000)
    zyx = ((pts - field.origin) / field.voxel_size)[:, ::-1].T
    expected = scipy.ndimage.map_coordinates(
        field.volume.astype(np.float64), zyx, order=3, mode="mirror"
    )
    np.testing.assert_allclose(field.get_densities(pts), expected, atol=1e-5)


def test_gradient_matches_finite_differences_per_angstrom(field):
    pts = _random_inside(field, 500)
    grads = field.get_gradients(pts)
    h = 1e-3
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = h
        fd = (field.get_densities(pts + step) - field.get_densities(pts - step)) / (2 * h)
        ok = np.isfinite(fd)
        # float32 densities over a 2e-3 Å baseline: about 1e-4 rounding error.
        np.testing.assert_allclose(grads[ok, axis], fd[ok], atol=3e-4)


def test_gradient_of_a_gaussian_blob_points_to_its_centre():
    centre = np.array([11.3, 10.2, 9.7])
    vmap = gaussian_blobs([centre], sigma_A=2.0)
    field = SplineDensityMap(vmap)
    p = centre + np.array([1.0, -0.5, 0.7])
    g = field.get_gradients(p)[0]
    direction = (centre - p) / np.linalg.norm(centre - p)
    assert np.dot(g / np.linalg.norm(g), direction) > 0.99


def test_nan_outside_and_for_nan_points(field):
    lo, hi = field.bounds
    vals = field.get_values([lo - 0.01, hi + [0, 0, 0.01], [np.nan, 0, 0], (lo + hi) / 2])
    assert np.all(np.isnan(vals[:3]))
    assert np.all(np.isfinite(vals[3]))


@pytest.mark.parametrize("bad", [np.zeros((4, 2)), np.zeros((2, 3, 3)), "abc"])
def test_bad_point_shapes_are_refused(field, bad):
    with pytest.raises(InputError, match=r"\(n, 3\)|numeric"):
        field.get_values(bad)


def test_empty_and_single_points(field):
    assert field.get_values(np.zeros((0, 3))).shape == (0, 4)
    assert field.get_values([]).shape == (0, 4)
    assert field.get_values(field.origin).shape == (1, 4)


def test_chunking_gives_the_same_values(field):
    pts = _random_inside(field, 3000)
    full = field.get_values(pts)
    field.chunk_points = 97
    try:
        np.testing.assert_array_equal(field.get_values(pts), full)
    finally:
        field.chunk_points = 1 << 16


def test_grids_and_resampling(field):
    values = field.sample_values(0.5)
    ax, ay, az = field.grid_axes(0.5)
    assert values.shape == (len(az), len(ay), len(ax), 4)
    np.testing.assert_array_equal(field.sample_densities(0.5), values[..., 0])
    np.testing.assert_array_equal(field.sample_gradients(0.5), values[..., 1:])
    pts, vals = field.sample_points(0.5, density_threshold=0.5)
    assert len(pts) == int((values[..., 0] >= 0.5).sum())
    assert np.all(vals[:, 0] >= 0.5)
    same = field.to_voxel_density_map()
    assert same.shape_xyz == field.shape_xyz
    np.testing.assert_allclose(same.data, field.volume, atol=2e-6)
    fine = field.to_voxel_density_map(0.5)
    np.testing.assert_allclose(fine.origin, field.origin)
    np.testing.assert_allclose(fine.data, values[..., 0], atol=1e-6)


def test_save_load_roundtrip(tmp_path, field):
    path = field.save(tmp_path / "f.neural")
    back = load_field(path)
    assert isinstance(back, SplineDensityMap)
    pts = _random_inside(field, 200)
    np.testing.assert_array_equal(back.get_values(pts), field.get_values(pts))
    assert back.normalisation == field.normalisation
    half = load_field(field.save(tmp_path / "h.neural", float16=True))
    np.testing.assert_allclose(half.get_densities(pts), field.get_densities(pts), atol=2e-3)
    assert (tmp_path / "h.neural").stat().st_size < 0.6 * path.stat().st_size
    with pytest.raises(FileExistsError):
        field.save(path)


def test_hot_voxel_lands_at_its_world_position(tmp_path):
    vmap = hot_voxel_map()
    field = SplineDensityMap(vmap)
    back = load_field(field.save(tmp_path / "hot.neural"))
    target = vmap.origin + np.array([1, 2, 3]) * vmap.voxel_size
    pts, vals = back.sample_points(*vmap.voxel_size, density_threshold=0.5)
    np.testing.assert_allclose(pts, [target], atol=1e-9)
    assert vals[0, 0] == pytest.approx(1.0)


def test_real_map_field_equals_voxels_at_grid():
    vmap = read_map(shared_file("emd_3488/emd_3488.mrc")).normalised()
    field = SplineDensityMap(vmap)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, 100, size=(500, 3))
    np.testing.assert_allclose(
        field.get_densities(vmap.index_to_world(idx)),
        vmap.data[idx[:, 2], idx[:, 1], idx[:, 0]],
        atol=1e-5,
    )
