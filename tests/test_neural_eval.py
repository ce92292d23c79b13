"""Tests of the fast neural-field evaluation: the tiling-based point path and the per-region
grid path against the plain reference blend (every region tested against every point,
float64 networks, forward-mode Jacobians), within float32 rounding.

Fields here are untrained SIRENs (high-frequency at initialisation, so a wrong region, scaling
or weight shows at once) over small tilings; every test runs in well under a second or two.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import random_neural_field

from neural_em.fields import neural_eval, siren
from neural_em.fields.neural import NeuralDensityMap

#: Tolerances of float32 networks against the float64 reference (measured: density
#: differences up to ~6e-8, gradient differences up to ~5e-7 of the gradient's largest size).
DENSITY_ATOL = 1e-5
GRADIENT_RTOL = 1e-4


#: An untrained field over several regions, with a training record per region; regions
#: listed in ``empty`` are untrained.
random_field = functools.partial(random_neural_field, empty=())


def border_points(field: NeuralDensityMap, rng: np.random.Generator, n: int) -> np.ndarray:
    """Points whose voxel coordinates sit on tile edges, overlap middles, box edges, a hair
    inside or outside them, mixed per axis with random coordinates."""
    per_axis = []
    for a, tiles in enumerate(field.tiling.tiles):
        marks = [0.0, field.shape_xyz[a] - 1.0]
        for lo, hi in tiles:
            marks += [lo, hi - 1.0, lo + 0.5, hi - 1.5]
        for (_, hi0), (lo1, _) in zip(tiles[:-1], tiles[1:], strict=True):
            marks.append(0.5 * (lo1 + hi0 - 1.0))
        marks = np.array(marks)
        marks = np.concatenate([marks, marks + 1e-9, marks - 1e-9, marks + 0.25])
        per_axis.append(marks)
    u = np.stack([rng.choice(m, n) for m in per_axis], axis=1)
    # Half the points: one or two axes random instead.
    rand = rng.uniform(0, np.array(field.shape_xyz) - 1, (n, 3))
    mix = rng.random((n, 3)) < 0.4
    u = np.where(mix, rand, u)
    return field.origin + u * field.voxel_size


def assert_matches_reference(field: NeuralDensityMap, points: np.ndarray) -> None:
    inside = field.contains(points)
    assert inside.any()
    ref = field._blend_reference(points[inside], True)
    new = field.get_values(points)
    assert new.dtype == np.float32 and new.shape == (len(points), 4)
    assert np.all(np.isnan(new[~inside]))
    got = new[inside].astype(np.float64)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[:, 0], ref[:, 0], rtol=0, atol=DENSITY_ATOL)
    scale = np.abs(ref[:, 1:]).max()
    assert scale > 0
    np.testing.assert_allclose(got[:, 1:], ref[:, 1:], rtol=0, atol=GRADIENT_RTOL * scale)
    dens = field._densities_fast(points)
    assert np.all(np.isnan(dens[~inside]))
    np.testing.assert_allclose(dens[inside], ref[:, 0], rtol=0, atol=DENSITY_ATOL)


# ---------------------------------------------------------------------- networks
def test_reverse_mode_gradient_equals_forward_mode_jacobian():
    w, b = siren.init_siren(
        3, [3, 16, 16, 1], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    w, b = siren.fold_omega(w, b)
    x = (
        torch.rand(3, 50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
        - 1
    )
    y_ref, dy_ref = siren.forward_with_jacobian(x, w, b)
    y, dy = siren.forward_with_gradient(x, w, b)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(dy, dy_ref, rtol=0, atol=1e-10)
    y_np, dy_np = siren.forward_numpy(
        x.numpy(),
        [t.transpose(1, 2).numpy() for t in w],
        [t.unsqueeze(1).numpy() for t in b],
        [t.numpy() for t in w],
    )
    np.testing.assert_allclose(y_np, y_ref.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dy_np, dy_ref.numpy(), rtol=0, atol=1e-10)
    y_only, none = siren.forward_numpy(
        x.numpy(), [t.transpose(1, 2).numpy() for t in w], [t.unsqueeze(1).numpy() for t in b]
    )
    assert none is None
    np.testing.assert_allclose(y_only, y_ref.numpy(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- points
def test_point_path_matches_reference_on_random_and_border_points():
    field = random_field()
    assert field.tiling.grid_shape == (4, 3, 2)  # 24 regions: overlaps on every axis
    assert len(field.trained) == 24
    rng = np.random.default_rng(0)
    lo, hi = field.bounds
    random_pts = rng.uniform(lo - 3.0, hi + 3.0, (3000, 3))  # some outside the box
    assert_matches_reference(field, np.concatenate([random_pts, border_points(field, rng, 3000)]))


def test_float64_point_path_matches_reference_to_rounding():
    field = random_field(seed=13, empty=(2,))
    rng = np.random.default_rng(4)
    lo, hi = field.bounds
    pts = np.concatenate([rng.uniform(lo, hi, (1500, 3)), border_points(field, rng, 1500)])
    pts = pts[field.contains(pts)]
    for with_gradient in (True, False):
        ref = field._blend_reference(pts, with_gradient)
        fast = field._blend(pts, with_gradient)
        assert fast.dtype == np.float64
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-9)


def test_point_path_with_anisotropic_voxels_and_odd_tiling():
    field = random_field(
        (41, 17, 9),
        voxel_size=(0.7, 1.9, 1.3),
        origin=(-10.0, 2.5, 0.0),
        size=14,
        overlap=5,
        seed=3,
    )
    assert field.tiling.grid_shape == (4, 2, 1)
    rng = np.random.default_rng(1)
    lo, hi = field.bounds
    assert_matches_reference(
        field,
        np.concatenate([rng.uniform(lo - 1, hi + 1, (2000, 3)), border_points(field, rng, 2000)]),
    )


def test_empty_regions_give_zero_but_keep_blend_weight():
    field = random_field(empty=(0, 4, 13, 20))
    assert len(field.trained) == 20
    rng = np.random.default_rng(2)
    lo, hi = field.bounds
    pts = np.concatenate([rng.uniform(lo, hi, (2000, 3)), border_points(field, rng, 2000)])
    assert_matches_reference(field, pts)
    # Deep inside empty region 0 (weight 1 there) the field is exactly zero.
    corner = field.origin + np.array([1.0, 1.0, 1.0]) * field.voxel_size
    np.testing.assert_array_equal(field.get_values(corner), np.zeros((1, 4), np.float32))
    all_empty = random_field(empty=tuple(range(24)))
    assert all_empty.trained == []
    np.testing.assert_array_equal(all_empty.get_values(pts[:50]), np.zeros((50, 4), np.float32))


def test_point_path_in_several_pieces_and_threads(monkeypatch):
    field = random_field(seed=5)
    rng = np.random.default_rng(3)
    lo, hi = field.bounds
    pts = rng.uniform(lo, hi, (5000, 3))
    whole = field.get_values(pts)
    monkeypatch.setattr(neural_eval, "_PIECE", 700)
    monkeypatch.setattr(neural_eval, "_PARALLEL_PAIRS", 100)
    monkeypatch.setattr(neural_eval, "_eval_threads", lambda: 3)
    pieces = field.get_values(pts)
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)
    monkeypatch.setattr(neural_eval, "_eval_threads", lambda: 1)
    np.testing.assert_allclose(field.get_values(pts), whole, rtol=0, atol=1e-6)


def test_single_point_and_no_points():
    field = random_field()
    p = field.origin + np.array([7.3, 5.1, 4.4])
    ref = field._blend_reference(p[None], True)
    np.testing.assert_allclose(field.get_values(p)[0, 0], ref[0, 0], atol=DENSITY_ATOL)
    assert field.get_values(np.zeros((0, 3))).shape == (0, 4)
    assert field._blend(np.zeros((0, 3)), True).shape == (0, 4)


# ---------------------------------------------------------------------- grids
@pytest.mark.parametrize("steps", [(0.5, None, None), (0.37, 0.81, 1.13), (1.0, 1.2, 0.9)])
def test_grid_slab_equals_point_evaluation(steps):
    field = random_field(seed=7, empty=(5,))
    ax, ay, az = field.grid_axes(*steps)
    for zs in (az, az[3:11], az[-2:]):
        grid = field._grid_slab_densities(ax, ay, zs)
        assert grid.shape == (len(zs), len(ay), len(ax)) and grid.dtype == np.float32
        pts = field._slab_points(ax, ay, zs)
        np.testing.assert_allclose(grid.ravel(), field._densities_fast(pts), rtol=0, atol=1e-6)
        ref = field._blend_reference(pts, False)[:, 0]
        np.testing.assert_allclose(grid.ravel(), ref, rtol=0, atol=DENSITY_ATOL)


def test_grid_methods_use_the_grid_path_and_agree():
    field = random_field((25, 19, 14), voxel_size=(1.1, 0.8, 1.4), size=10, seed=9)
    vmap = field.to_voxel_density_map()
    assert vmap.data.shape == (14, 19, 25)
    pts = field._slab_points(*field.grid_axes(*field.voxel_size))
    ref = field._blend_reference(pts, False)[:, 0]
    np.testing.assert_allclose(vmap.data.ravel(), ref, rtol=0, atol=DENSITY_ATOL)
    kept, values = field.sample_points(0.6, density_threshold=0.5)
    assert len(kept) > 0
    np.testing.assert_allclose(values, field.get_values(kept), rtol=0, atol=1e-6)
    assert np.all(values[:, 0] >= 0.5 - 1e-5)


def test_grid_slab_outside_the_box_is_nan_and_unsorted_axes_fall_back():
    field = random_field(seed=11)
    lo, hi = field.bounds
    ax = np.linspace(lo[0] - 2.0, hi[0] + 2.0, 23)
    ay = np.linspace(lo[1], hi[1], 17)
    az = np.array([lo[2] - 1.0, lo[2] + 3.3, hi[2]])
    grid = field._grid_slab_densities(ax, ay, az)
    pts = field._slab_points(ax, ay, az)
    np.testing.assert_allclose(grid.ravel(), field._densities_fast(pts), rtol=0, atol=1e-6)
    inside = field.contains(pts).reshape(grid.shape)
    assert not inside.all() and inside.any()
    assert np.isnan(grid[~inside]).all() and np.isfinite(grid[inside]).all()
    shuffled = ax[np.random.default_rng(0).permutation(len(ax))]
    np.testing.assert_allclose(
        field._grid_slab_densities(shuffled, ay, az).ravel(),
        field._densities_fast(field._slab_points(shuffled, ay, az)),
        rtol=0,
        atol=1e-6,
    )
