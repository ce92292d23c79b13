"""Trilinear and Fourier fields: exactness, accuracy order, gradients, geometry and files."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import central_difference_gradients, gaussian_blobs, hot_voxel_map

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields.classical import (
    FourierDensityMap,
    TrilinearDensityMap,
    choose_upsampling,
    fourier_upsample,
)
from neural_em.fields.spline import SplineDensityMap
from neural_em.voxelmap import VoxelMap

CLASSES = [TrilinearDensityMap, FourierDensityMap]

RNG = np.random.default_rng(1)
CENTRES = RNG.uniform([6, 6, 6], [18, 16, 14], size=(6, 3))


def blob_truth(points: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Analytic density and gradient of the blobs at points."""
    dens = np.zeros(len(points))
    grad = np.zeros((len(points), 3))
    for c in CENTRES:
        e = np.exp(-np.sum((points - c) ** 2, axis=1) / (2 * sigma**2))
        dens += e
        grad += e[:, None] * (-(points - c) / sigma**2)
    return dens, grad


@pytest.fixture(scope="module")
def blobs() -> VoxelMap:
    return gaussian_blobs(CENTRES, shape_xyz=(24, 22, 20), sigma_A=1.5)


def test_error_order_on_smooth_volume(blobs):
    """Smooth, nearly band-limited volume: Fourier < cubic spline < trilinear, by far."""
    pts = np.random.default_rng(2).uniform([4, 4, 4], [19, 17, 15], size=(5000, 3))
    errors = {}
    for name, field in [
        ("trilinear", TrilinearDensityMap(blobs)),
        ("spline", SplineDensityMap(blobs)),
        ("fourier", FourierDensityMap(blobs)),
    ]:
        norm = field.normalisation
        scale = norm.clip_max - norm.clip_min
        dens, grad = blob_truth(pts, 1.5)
        values = field.get_values(pts)
        errors[name] = (
            np.abs(values[:, 0] - norm.to_normalised(dens)).mean(),
            np.abs(values[:, 1:] - grad / scale).mean(),
        )
    # Measured: density MAE 5.0e-3, 1.6e-4, 1.9e-6; gradient MAE 8.1e-3, 3.4e-4, 4.7e-6.
    for k in (0, 1):
        assert errors["fourier"][k] < 0.1 * errors["spline"][k]
        assert errors["spline"][k] < 0.1 * errors["trilinear"][k]
    assert errors["fourier"][0] < 1e-5


def test_fourier_exact_for_band_limited_signals():
    n = 16
    x, y, z = np.meshgrid(np.arange(n), np.arange(n - 2), np.arange(n - 4), indexing="xy")

    def periodic(px, py, pz):  # period n, n-2, n-4 voxels; below Nyquist
        return (
            1.0
            + 0.3 * np.sin(2 * np.pi * (3 * px / n + 0.1)) * np.cos(2 * np.pi * 2 * py / (n - 2))
            + 0.2 * np.cos(2 * np.pi * 5 * pz / (n - 4))
        )

    data = np.transpose(periodic(x, y, z), (2, 0, 1)).astype(np.float32)  # (z, y, x)
    vmap = VoxelMap(data=data, voxel_size=(1.0, 1.2, 0.8), origin=(5.0, -3.0, 2.0))
    field = FourierDensityMap(vmap, boundary="periodic", upsample=4)
    pts = (
        vmap.origin
        + np.random.default_rng(3).uniform(0, 1, (4000, 3))
        * (np.array(vmap.shape_xyz) - 1)
        * vmap.voxel_size
    )
    u = (pts - vmap.origin) / vmap.voxel_size
    truth = field.normalisation.to_normalised(periodic(u[:, 0], u[:, 1], u[:, 2]))
    err = np.abs(field.get_densities(pts) - truth)
    # Exact at the upsampled grid (below); between its points the cubic spline on a 4x grid
    # leaves a residual shrinking as k^-4: measured max 1.1e-4 at k=4, 6.5e-6 at k=8 (the
    # mirror boundary, which does not suit this signal, gives 0.12).
    assert err.max() < 3e-4
    up = fourier_upsample(data, (4, 4, 4), boundary="periodic")
    uz, uy, ux = np.meshgrid(*(np.arange(s) / 4 for s in up.shape), indexing="ij")
    np.testing.assert_allclose(up, periodic(ux, uy, uz), atol=2e-6)
    # Mirror boundary: exact for cosine series whose period is twice the box.
    t = np.arange(n)
    cos = 0.5 + 0.2 * np.cos(np.pi * 3 * t / (n - 1)) + 0.1 * np.cos(np.pi * 11 * t / (n - 1))
    up = fourier_upsample(np.broadcast_to(cos, (3, 3, n)), (1, 1, 5), boundary="mirror")
    tt = np.arange(up.shape[2]) / 5
    exact = 0.5 + 0.2 * np.cos(np.pi * 3 * tt / (n - 1)) + 0.1 * np.cos(np.pi * 11 * tt / (n - 1))
    np.testing.assert_allclose(up[1, 1], exact, atol=2e-6)


@pytest.mark.parametrize("boundary", ["mirror", "periodic"])
def test_fourier_upsample_keeps_samples(boundary):
    data = np.random.default_rng(4).random((7, 10, 9)).astype(np.float32)
    up = fourier_upsample(data, (2, 3, 4), boundary=boundary)
    assert up.shape == (13, 28, 33)
    np.testing.assert_allclose(up[::2, ::3, ::4], data, atol=2e-6)


@pytest.mark.parametrize("cls", CLASSES)
def test_interpolates_voxels_and_hot_voxel_position(cls):
    vmap = hot_voxel_map()  # hot voxel at x=1, y=2, z=3; anisotropic voxels, offset origin
    field = cls.from_voxel_data(vmap)
    hot_world = vmap.index_to_world([[1, 2, 3]])[0]
    assert field.get_densities(hot_world)[0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(
        field.get_densities(vmap.grid_points()), vmap.data.ravel(), atol=1e-5
    )
    resampled = field.to_voxel_density_map()
    np.testing.assert_allclose(resampled.origin, vmap.origin)
    z, y, x = np.unravel_index(np.argmax(resampled.data), resampled.data.shape)
    assert (x, y, z) == (1, 2, 3)
    fine = field.sample_densities(*(vmap.voxel_size / 4))
    z, y, x = np.unravel_index(np.argmax(fine), fine.shape)
    np.testing.assert_allclose(
        vmap.origin + np.array([x, y, z]) * vmap.voxel_size / 4, hot_world, atol=1e-9
    )


@pytest.mark.parametrize("cls", CLASSES)
def test_nan_outside_and_shapes(cls, blobs):
    field = cls(blobs)
    lo, hi = field.bounds
    pts = np.array([lo - 0.01, hi + [0, 0, 0.01], [np.nan, 1, 1], (lo + hi) / 2, hi, lo])
    values = field.get_values(pts)
    assert values.shape == (6, 4) and values.dtype == np.float32
    assert np.all(np.isnan(values[:3])) and np.all(np.isfinite(values[3:]))
    assert np.isnan(field._densities_fast(pts[:1]))[0]


@pytest.mark.parametrize("cls", CLASSES)
def test_gradient_matches_finite_differences(cls, blobs):
    field = cls(blobs)
    pts = np.random.default_rng(5).uniform([5, 5, 5], [18, 16, 14], size=(300, 3))
    if cls is TrilinearDensityMap:  # keep central differences inside one cell
        pts = np.floor(pts) + np.random.default_rng(6).uniform(0.2, 0.8, pts.shape)
    grad = field.get_gradients(pts).astype(np.float64)
    fd = central_difference_gradients(field, pts, h=1e-3)
    # float32 densities: difference noise about 6e-8 / 2e-3 = 3e-5 per Å.
    np.testing.assert_allclose(grad, fd, atol=2e-4)


def test_trilinear_gradient_is_piecewise_constant_along_axis(blobs):
    field = TrilinearDensityMap(blobs)
    x = np.linspace(7.05, 7.95, 7)
    pts = np.stack([x, np.full(7, 9.3), np.full(7, 8.6)], axis=1)
    g = field.get_gradients(pts)
    np.testing.assert_allclose(g[:, 0], g[0, 0], rtol=1e-5)
    assert np.ptp(g[:, 1]) > 1e-4  # d/dy varies linearly with x inside the cell


def test_choose_upsampling_respects_memory_cap():
    assert choose_upsampling((50, 50, 50), 1.0) == (4, 4, 4)
    k = choose_upsampling((100, 100, 100), 1.0, max_upsampled_voxels=1 << 24)
    assert np.prod([(100 - 1) * f + 1 for f in k]) <= 1 << 24 and min(k) >= 2
    assert choose_upsampling((10, 10, 1), (1.0, 2.0, 1.0)) == (4, 8, 1)
    assert choose_upsampling((400, 400, 400), 1.0, max_upsampled_voxels=1000) == (1, 1, 1)
    with pytest.raises(InputError):
        FourierDensityMap(hot_voxel_map(), upsample=0)


@pytest.mark.parametrize("cls", CLASSES)
def test_save_load_roundtrip(cls, blobs, tmp_path):
    field = cls(blobs)
    path = field.save(tmp_path / "f.neural")
    with pytest.raises(FileExistsError):
        field.save(path)
    back = cls.load(path)
    pts = np.random.default_rng(7).uniform([3, 3, 3], [20, 18, 16], size=(200, 3))
    np.testing.assert_allclose(back.get_values(pts), field.get_values(pts), atol=1e-6)
    assert back.normalisation == field.normalisation
    other = TrilinearDensityMap if cls is FourierDensityMap else FourierDensityMap
    with pytest.raises(FieldFormatError, match="kind"):
        other.load(path)


def test_from_voxel_data_array_is_normalised():
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5) - 10.0
    field = TrilinearDensityMap.from_voxel_data(data, voxel_size=2.0, origin=(1, 2, 3))
    assert field.normalisation.original_min == -10.0
    assert field.get_densities([1.0, 2.0, 3.0])[0] == 0.0
    assert field.get_densities([9.0, 8.0, 7.0])[0] == pytest.approx(1.0)
    single = TrilinearDensityMap.from_voxel_data(np.array([[[0.0, 1.0]]]))
    assert single.get_values([0.5, 0.0, 0.0])[0] == pytest.approx([0.5, 1.0, 0.0, 0.0])


def test_load_field_dispatches_classical_kinds(tmp_path):
    from neural_em.fields import load_field

    blobs = gaussian_blobs([[10.0, 11.0, 9.0]], shape_xyz=(20, 22, 18), sigma_A=1.5)
    pts = np.array([[10.3, 10.6, 9.2], [5.0, 5.0, 5.0]])
    for cls in (TrilinearDensityMap, FourierDensityMap):
        field = cls(blobs)
        back = load_field(field.save(tmp_path / f"{cls.kind}.neural"))
        assert type(back) is cls
        np.testing.assert_array_equal(back.get_values(pts), field.get_values(pts))
