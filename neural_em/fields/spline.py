"""A cubic B-spline density field: the classical baseline and the fast path.

The normalised volume is prefiltered into cubic B-spline coefficients (scipy, mirror
boundary), so the field interpolates every voxel exactly; density and gradient come from the
same 4×4×4 coefficient stencil, the gradient by the exact derivative of the basis, the Hessian
by its second derivative. No training.

:class:`SplineGrid` is that interpolation on one grid; :class:`SplineGridField` a field
answered by it: :class:`SplineDensityMap` on the map's own voxels, the Fourier and learned
fields on a finer grid over the same box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage

from neural_em.fields.base import VolumeField
from neural_em.voxelmap import VoxelMap


def _bspline_second_derivative(t: np.ndarray) -> np.ndarray:
    """Second derivatives ``(n, 4)`` of the cubic B-spline weights (see
    :func:`_bspline_weights`) for fractional offsets ``t`` ``(n,)``."""
    return np.stack([1.0 - t, 3 * t - 2.0, 1.0 - 3 * t, t], axis=1)


def _bspline_weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline weights and their derivatives for fractional offsets ``t`` ``(n,)``.

    Returns two ``(n, 4)`` arrays for the four samples ``floor(u) - 1 .. floor(u) + 2``.
    """
    t2, t3 = t * t, t * t * t
    s = 1.0 - t
    w = np.stack(
        [
            s * s * s / 6.0,
            (3 * t3 - 6 * t2 + 4) / 6.0,
            (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0,
            t3 / 6.0,
        ],
        axis=1,
    )
    dw = np.stack([-0.5 * s * s, 1.5 * t2 - 2 * t, -1.5 * t2 + t + 0.5, 0.5 * t2], axis=1)
    return w, dw


class SplineGrid:
    """Cubic B-spline interpolation (mirror boundary) of a volume ``(nz, ny, nx)`` on a grid of
    ``voxel_size`` and ``origin`` (x, y, z, Å); points ``(n, 3)`` Å inside its box."""

    def __init__(self, volume: np.ndarray, voxel_size: Any, origin: Any) -> None:
        self.shape_xyz = tuple(int(n) for n in volume.shape[::-1])
        self.voxel_size = np.asarray(voxel_size, dtype=np.float64)
        self.origin = np.asarray(origin, dtype=np.float64)
        self.coeffs = scipy.ndimage.spline_filter(volume.astype(np.float64), order=3, mode="mirror")
        self._padded = np.pad(self.coeffs, 2, mode="reflect").ravel()
        pz, py, px = (n + 4 for n in volume.shape)
        a = np.arange(4)
        self._offsets = (
            a[:, None, None] * py * px + a[None, :, None] * px + a[None, None, :]
        ).ravel()
        self._strides = np.array([1, px, py * px])  # x, y, z strides in the padded array

    def _stencil(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``(n, 4, 4, 4)`` (z, y, x) coefficients around each point and its fractional
        offsets ``(n, 3)`` inside its voxel."""
        u = (points - self.origin) / self.voxel_size  # fractional voxel index, x, y, z
        shape = np.array(self.shape_xyz)
        u = np.clip(u, 0.0, shape - 1.0)
        base = np.floor(u)
        base = np.minimum(base, shape - 1)  # u == n-1 keeps its stencil inside the padding
        t = u - base
        corner = base.astype(np.int64) + 1  # (floor - 1) + 2 padding
        flat = corner @ self._strides
        return self._padded[flat[:, None] + self._offsets].reshape(-1, 4, 4, 4), t

    def values(self, points: np.ndarray) -> np.ndarray:
        """Density and gradient ``(n, 4)`` float32 (density per Å) at ``points`` ``(n, 3)``."""
        c, t = self._stencil(points)
        wx, dwx = _bspline_weights(t[:, 0])
        wy, dwy = _bspline_weights(t[:, 1])
        wz, dwz = _bspline_weights(t[:, 2])
        cx = np.einsum("nzyx,nx->nzy", c, wx)
        cdx = np.einsum("nzyx,nx->nzy", c, dwx)
        cxy = np.einsum("nzy,ny->nz", cx, wy)
        cxdy = np.einsum("nzy,ny->nz", cx, dwy)
        cdxy = np.einsum("nzy,ny->nz", cdx, wy)
        out = np.empty((len(points), 4), dtype=np.float32)
        out[:, 0] = np.einsum("nz,nz->n", cxy, wz)
        out[:, 1] = np.einsum("nz,nz->n", cdxy, wz) / self.voxel_size[0]
        out[:, 2] = np.einsum("nz,nz->n", cxdy, wz) / self.voxel_size[1]
        out[:, 3] = np.einsum("nz,nz->n", cxy, dwz) / self.voxel_size[2]
        return out

    def hessians(self, points: np.ndarray) -> np.ndarray:
        """Hessians ``(n, 3, 3)`` float64 (density per Å^2) at ``points`` ``(n, 3)``: the exact
        second derivative of the basis, on the same 4x4x4 stencil as :meth:`values`."""
        c, t = self._stencil(points)
        wx, dx = _bspline_weights(t[:, 0])
        wy, dy = _bspline_weights(t[:, 1])
        wz, dz = _bspline_weights(t[:, 2])
        ddx, ddy, ddz = (_bspline_second_derivative(t[:, k]) for k in range(3))
        # Contract x, then y, then z, each with the weights of derivative order 0, 1, 2.
        cx = [np.einsum("nzyx,nx->nzy", c, w) for w in (wx, dx, ddx)]
        vs = self.voxel_size
        hess = np.empty((len(points), 3, 3), dtype=np.float64)

        def entry(ox: int, oy: int, oz: int) -> np.ndarray:
            cy = np.einsum("nzy,ny->nz", cx[ox], (wy, dy, ddy)[oy])
            return np.einsum("nz,nz->n", cy, (wz, dz, ddz)[oz])

        hess[:, 0, 0] = entry(2, 0, 0) / (vs[0] * vs[0])
        hess[:, 1, 1] = entry(0, 2, 0) / (vs[1] * vs[1])
        hess[:, 2, 2] = entry(0, 0, 2) / (vs[2] * vs[2])
        hess[:, 0, 1] = hess[:, 1, 0] = entry(1, 1, 0) / (vs[0] * vs[1])
        hess[:, 0, 2] = hess[:, 2, 0] = entry(1, 0, 1) / (vs[0] * vs[2])
        hess[:, 1, 2] = hess[:, 2, 1] = entry(0, 1, 1) / (vs[1] * vs[2])
        return hess

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each point ``(n, 3)`` lies in the grid's box (as
        :meth:`~neural_em.fields.base.DensityField.contains`): ``(n,)`` bool."""
        top = self.origin + (np.array(self.shape_xyz) - 1) * self.voxel_size
        tol = 1e-6 * self.voxel_size
        return np.all((points >= self.origin - tol) & (points <= top + tol), axis=1)

    def densities(self, points: np.ndarray) -> np.ndarray:
        """Densities ``(n,)`` float32 (scipy's evaluation), NaN outside the grid's box."""
        out = np.full(len(points), np.nan, dtype=np.float32)
        inside = self.contains(points)
        if inside.any():
            zyx = ((points[inside] - self.origin) / self.voxel_size)[:, ::-1].T
            out[inside] = scipy.ndimage.map_coordinates(
                self.coeffs, zyx, order=3, mode="mirror", prefilter=False
            )
        return out

    def _axis_weights(self, coords: np.ndarray, axis: int) -> np.ndarray:
        """Dense ``(len(coords), n + 4)`` B-spline weights along one axis (0=x) of the padded
        coefficients: each row holds the four weights of one grid coordinate (Å)."""
        n = self.shape_xyz[axis]
        u = np.clip((coords - self.origin[axis]) / self.voxel_size[axis], 0.0, n - 1.0)
        base = np.minimum(np.floor(u), n - 1)
        w, _ = _bspline_weights(u - base)
        out = np.zeros((len(coords), n + 4))
        rows = np.arange(len(coords))
        for k in range(4):
            out[rows, base.astype(np.int64) + 1 + k] = w[:, k]
        return out

    def slab_densities(self, ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
        """Densities ``(len(az), len(ay), len(ax))`` float32 on the grid of coordinates
        ``ax``, ``ay``, ``az`` (Å): separable, three small matrix products instead of a
        64-coefficient gather per point (same values to rounding)."""
        nx, ny, nz = (n + 4 for n in self.shape_xyz)
        coeffs = self._padded.reshape(nz, ny, nx)
        wz = self._axis_weights(az, 2)
        used = np.flatnonzero(wz.any(axis=0))
        slab = wz[:, used] @ coeffs[used].reshape(len(used), -1)  # (mz, ny*nx)
        slab = slab.reshape(len(az), ny, nx) @ self._axis_weights(ax, 0).T  # (mz, ny, mx)
        slab = np.matmul(self._axis_weights(ay, 1), slab)  # (mz, my, mx)
        return slab.astype(np.float32)


class SplineGridField(VolumeField):
    """A field answered by a :class:`SplineGrid` (``grid``): on its own voxels (the spline
    field) or on a finer grid over the same box (the Fourier and learned fields, which build
    the finer volume and call :meth:`_set_grid`). Density, gradient and Hessian are the
    spline's, all analytic."""

    grid: SplineGrid

    def _set_grid(self, fine: VoxelMap) -> None:
        """Answer queries by the cubic B-spline of ``fine`` (a grid over this field's box)."""
        self.grid = SplineGrid(fine.data, fine.voxel_size, fine.origin)

    def _evaluate(self, points: np.ndarray) -> np.ndarray:
        return self.grid.values(points)

    def _evaluate_hessians(self, points: np.ndarray) -> np.ndarray:
        return self.grid.hessians(points)

    def _densities_fast(self, points: np.ndarray) -> np.ndarray:
        return self.grid.densities(points)

    def _grid_slab_densities(self, ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
        return self.grid.slab_densities(ax, ay, az)


class SplineDensityMap(SplineGridField):
    """Cubic B-spline field over a normalised voxel map (same interface as the neural map)."""

    kind = "spline"

    def __init__(self, volume: VoxelMap) -> None:
        super().__init__(volume, {"interpolation": "cubic B-spline, mirror boundary"})
        self.grid = SplineGrid(self.volume, self.voxel_size, self.origin)
