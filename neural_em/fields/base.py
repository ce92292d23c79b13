"""The query interface shared by every continuous density field.

A field represents one normalised voxel map (densities in [0, 1]) continuously over its box:
from the first voxel at ``origin`` to the last at ``origin + (shape_xyz - 1) * voxel_size``.
Subclasses implement :meth:`DensityField._evaluate`; everything else (checks, chunking, NaN
outside the box, grids, resampling) lives here so graphs and benchmarks can use any field.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from neural_em.errors import InputError
from neural_em.voxelmap import Normalisation, VoxelMap, check_voxel_count, write_map

logger = logging.getLogger(__name__)

#: Points evaluated per chunk by default: memory stays bounded for any number of points.
DEFAULT_CHUNK_POINTS = 1 << 16


def as_points(points: Any, name: str = "points") -> np.ndarray:
    """Check and convert query points to a float64 array ``(n, 3)`` (x, y, z, Å).

    A single point ``(3,)`` becomes ``(1, 3)``; an empty input becomes ``(0, 3)``. Points may
    hold NaN (they give NaN values); anything not shaped ``(n, 3)`` raises ``InputError``.
    """
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric, shaped (n, 3)") from exc
    if arr.size == 0:
        return np.zeros((0, 3))
    if arr.ndim == 1 and arr.shape[0] == 3:
        arr = arr[np.newaxis]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"{name} must be shaped (n, 3) in x, y, z Å, got {arr.shape}")
    return arr


class DensityField(abc.ABC):
    """A continuous density field over the box of a normalised voxel map.

    Attributes: ``map_id``; ``shape_xyz`` voxels; ``voxel_size`` and ``origin`` ``(3,)`` Å in
    x, y, z; ``normalisation`` (how the map was scaled to [0, 1]); ``metadata`` (a JSON-able
    dict saved with the field).
    """

    #: Name of the field kind in files and on the command line.
    kind: str = "field"

    def __init__(self, *, shape_xyz: Any, voxel_size: Any, origin: Any,
                 normalisation: Normalisation | None, map_id: str = "",
                 metadata: dict[str, Any] | None = None) -> None:
        self.shape_xyz = tuple(int(n) for n in shape_xyz)
        if len(self.shape_xyz) != 3 or min(self.shape_xyz) < 1:
            raise InputError(f"shape_xyz must be three positive integers, got {shape_xyz!r}")
        self.voxel_size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
        self.origin = np.broadcast_to(np.asarray(origin, dtype=np.float64), (3,)).copy()
        if np.any(~np.isfinite(self.voxel_size)) or np.any(self.voxel_size <= 0):
            raise InputError(f"voxel_size must be positive, got {self.voxel_size.tolist()}")
        if np.any(~np.isfinite(self.origin)):
            raise InputError(f"origin must be finite, got {self.origin.tolist()}")
        self.normalisation = normalisation
        self.map_id = map_id
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.chunk_points = DEFAULT_CHUNK_POINTS

    # ------------------------------------------------------------------ geometry
    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest world points ``(3,)`` Å of the field's box (voxel centres)."""
        return self.origin.copy(), self.origin + (np.array(self.shape_xyz) - 1) * self.voxel_size

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean ``(n,)``: which points lie inside the box (NaN points do not)."""
        pts = as_points(points)
        lo, hi = self.bounds
        tol = 1e-6 * self.voxel_size
        return np.all((pts >= lo - tol) & (pts <= hi + tol), axis=1)

    # ------------------------------------------------------------------ queries
    @abc.abstractmethod
    def _evaluate(self, points: np.ndarray) -> np.ndarray:
        """Values ``(n, 4)`` [density, d/dx, d/dy, d/dz] per Å at points ``(n, 3)`` inside the box."""

    def get_values(self, points: Any) -> np.ndarray:
        """Density and gradient at points.

        points: ``(n, 3)`` x, y, z in Å. Returns ``(n, 4)`` float32: normalised density and
        its gradient dρ/dx, dρ/dy, dρ/dz in density per Å; NaN rows outside the box (and for
        NaN points). Evaluated in chunks of ``chunk_points``.
        """
        pts = as_points(points)
        out = np.full((len(pts), 4), np.nan, dtype=np.float32)
        inside = self.contains(pts)
        idx = np.flatnonzero(inside)
        for start in range(0, len(idx), self.chunk_points):
            sel = idx[start:start + self.chunk_points]
            out[sel] = self._evaluate(pts[sel])
        return out

    def get_densities(self, points: Any) -> np.ndarray:
        """Normalised density ``(n,)`` at points ``(n, 3)`` Å; NaN outside the box."""
        return self.get_values(points)[:, 0]

    def get_gradients(self, points: Any) -> np.ndarray:
        """Gradient ``(n, 3)`` in density per Å at points ``(n, 3)`` Å; NaN outside the box."""
        return self.get_values(points)[:, 1:]

    # ------------------------------------------------------------------ grids
    def grid_axes(self, step_x: float, step_y: float | None = None,
                  step_z: float | None = None) -> list[np.ndarray]:
        """World coordinates (Å) along x, y, z of a uniform grid over the box from ``origin``."""
        steps = [step_x, step_x if step_y is None else step_y, step_x if step_z is None else step_z]
        lo, hi = self.bounds
        axes = []
        for s, a, b in zip(steps, lo, hi, strict=True):
            s = float(s)
            if not np.isfinite(s) or s <= 0:
                raise InputError(f"grid step must be a positive number of Å, got {s!r}")
            n = int(np.floor((b - a) / s + 1e-6)) + 1
            axes.append(a + s * np.arange(n))
        check_voxel_count(int(np.prod([len(a) for a in axes])), "the sampling grid")
        return axes

    def iter_grid_chunks(self, step_x: float, step_y: float | None = None,
                         step_z: float | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(z_slice, points)`` for consecutive z-slabs of the grid, each slab's points
        ``(m, 3)`` Å in ``(z, y, x)`` C order, with about ``chunk_points`` points a slab."""
        ax, ay, az = self.grid_axes(step_x, step_y, step_z)
        per_plane = len(ax) * len(ay)
        planes = max(1, self.chunk_points // per_plane)
        yy, xx = np.meshgrid(ay, ax, indexing="ij")
        plane = np.stack([xx.ravel(), yy.ravel()], axis=1)
        for z0 in range(0, len(az), planes):
            zs = az[z0:z0 + planes]
            pts = np.empty((len(zs) * per_plane, 3))
            pts[:, :2] = np.tile(plane, (len(zs), 1))
            pts[:, 2] = np.repeat(zs, per_plane)
            yield slice(z0, z0 + len(zs)), pts

    def sample_values(self, step_x: float, step_y: float | None = None,
                      step_z: float | None = None) -> np.ndarray:
        """Values on a uniform grid from ``origin``: ``(nz, ny, nx, 4)`` float32."""
        ax, ay, az = self.grid_axes(step_x, step_y, step_z)
        out = np.empty((len(az), len(ay), len(ax), 4), dtype=np.float32)
        for zslice, pts in self.iter_grid_chunks(step_x, step_y, step_z):
            out[zslice] = self.get_values(pts).reshape(-1, len(ay), len(ax), 4)
        return out

    def sample_densities(self, step_x: float, step_y: float | None = None,
                         step_z: float | None = None) -> np.ndarray:
        """Densities on a uniform grid from ``origin``: ``(nz, ny, nx)`` float32."""
        return self.sample_values(step_x, step_y, step_z)[..., 0]

    def sample_gradients(self, step_x: float, step_y: float | None = None,
                         step_z: float | None = None) -> np.ndarray:
        """Gradients on a uniform grid from ``origin``: ``(nz, ny, nx, 3)`` float32, per Å."""
        return self.sample_values(step_x, step_y, step_z)[..., 1:]

    def sample_points(self, step_x: float, step_y: float | None = None,
                      step_z: float | None = None, *, density_threshold: float = 0.0
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Grid points whose density is ``>= density_threshold``.

        Returns ``(points (m, 3) Å, values (m, 4))``, processed slab by slab so memory is
        bounded by the number of points kept.
        """
        kept_pts, kept_vals = [], []
        for _, pts in self.iter_grid_chunks(step_x, step_y, step_z):
            dens = self._densities_fast(pts)
            keep = dens >= density_threshold
            if keep.any():
                kept_pts.append(pts[keep])
                kept_vals.append(self.get_values(pts[keep]))
        if not kept_pts:
            return np.zeros((0, 3)), np.zeros((0, 4), dtype=np.float32)
        return np.concatenate(kept_pts), np.concatenate(kept_vals)

    def _densities_fast(self, points: np.ndarray) -> np.ndarray:
        """Densities only, at points inside the box; subclasses may skip the gradient."""
        return self.get_values(points)[:, 0]

    # ------------------------------------------------------------------ resampling
    def to_voxel_density_map(self, voxel_size: Any = None) -> VoxelMap:
        """Resample the field on a grid of ``voxel_size`` Å (default: the field's own)."""
        vs = self.voxel_size if voxel_size is None else np.broadcast_to(
            np.asarray(voxel_size, dtype=np.float64), (3,))
        ax, ay, az = self.grid_axes(*vs)
        data = np.empty((len(az), len(ay), len(ax)), dtype=np.float32)
        for zslice, pts in self.iter_grid_chunks(*vs):
            data[zslice] = self._densities_fast(pts).reshape(-1, len(ay), len(ax))
        return VoxelMap(data=data, voxel_size=vs, origin=self.origin, map_id=self.map_id,
                        normalisation=self.normalisation)

    def save_as_voxel_map(self, path: str | os.PathLike, voxel_size: Any = None, *,
                          overwrite: bool = False) -> Path:
        """Resample (see :meth:`to_voxel_density_map`) and write an MRC file atomically."""
        return write_map(path, self.to_voxel_density_map(voxel_size), overwrite=overwrite)

    # ------------------------------------------------------------------ files
    def file_metadata(self) -> dict[str, Any]:
        """The metadata every field file carries (extended by subclasses)."""
        return {
            "kind": self.kind,
            "map_id": self.map_id,
            "shape_xyz": list(self.shape_xyz),
            "voxel_size": self.voxel_size.tolist(),
            "origin": self.origin.tolist(),
            "normalisation": None if self.normalisation is None else self.normalisation.to_dict(),
            **self.metadata,
        }

    @abc.abstractmethod
    def save(self, path: str | os.PathLike, *, overwrite: bool = False,
             float16: bool = False) -> Path:
        """Write the field as a ``.neural`` file (safetensors + JSON metadata), atomically."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(map_id={self.map_id!r}, shape_xyz={self.shape_xyz}, "
                f"voxel_size={self.voxel_size.round(4).tolist()}, "
                f"origin={self.origin.round(3).tolist()})")
