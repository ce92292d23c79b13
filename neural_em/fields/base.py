"""The query interface shared by every continuous density field.

A field represents one normalised voxel map (densities in [0, 1]) continuously over its box:
from the first voxel at ``origin`` to the last at ``origin + (shape_xyz - 1) * voxel_size``.
Subclasses implement :meth:`DensityField._evaluate`; everything else (checks, chunking, NaN
outside the box, grids, resampling) lives here so graphs and benchmarks can use any field.
:class:`VolumeField` adds what the fields computed straight from the voxel volume share
(constructors, the stored volume); the neural field derives from :class:`DensityField` alone.
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
from neural_em.fields.fileformat import read_field_file, volume_from_file, write_field_file
from neural_em.mrcread import check_voxel_count
from neural_em.voxelmap import Normalisation, VoxelMap, as_voxel_map, load_normalised, write_map

logger = logging.getLogger(__name__)

#: Points evaluated per chunk by default: memory stays bounded for any number of points, and
#: a chunk's gather arrays stay in cache (the spline is ~1.7x faster than at 2^16).
DEFAULT_CHUNK_POINTS = 1 << 13
#: Grid points per slab for density-only grid sampling (larger slabs amortise per-slab work:
#: the spline's separable slab evaluation is 5x faster at 2^20 than at 2^16 points).
DEFAULT_GRID_CHUNK_POINTS = 1 << 20


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


def _xyz(value: Any, name: str) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be one or three numbers (x, y, z), got {value!r}") from exc


class DensityField(abc.ABC):
    """A continuous density field over the box of a normalised voxel map.

    Attributes: ``map_id``; ``shape_xyz`` voxels; ``voxel_size`` and ``origin`` ``(3,)`` Å in
    x, y, z; ``normalisation`` (how the map was scaled to [0, 1]); ``metadata`` (a JSON-able
    dict saved with the field).
    """

    #: Name of the field kind in files and on the command line.
    kind: str = "field"
    #: Whether fitting trains on devices with a preset (:func:`neural_em.fields.fit_field`
    #: passes ``devices`` and ``preset`` only then).
    trained: bool = False
    #: Largest sampling grid (points) accepted by the grid methods; None: ``NEURAL_EM_MAX_VOXELS``
    #: or the default (see :func:`neural_em.mrcread.max_voxels_limit`).
    max_voxels: int | None = None

    def __init__(
        self,
        *,
        shape_xyz: Any,
        voxel_size: Any,
        origin: Any,
        normalisation: Normalisation | None,
        map_id: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        try:
            self.shape_xyz = tuple(int(n) for n in shape_xyz)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"shape_xyz must be three positive integers, got {shape_xyz!r}"
            ) from exc
        if len(self.shape_xyz) != 3 or min(self.shape_xyz) < 1:
            raise InputError(f"shape_xyz must be three positive integers, got {shape_xyz!r}")
        self.voxel_size = _xyz(voxel_size, "voxel_size")
        self.origin = _xyz(origin, "origin")
        if np.any(~np.isfinite(self.voxel_size)) or np.any(self.voxel_size <= 0):
            raise InputError(f"voxel_size must be positive, got {self.voxel_size.tolist()}")
        if np.any(~np.isfinite(self.origin)):
            raise InputError(f"origin must be finite, got {self.origin.tolist()}")
        with np.errstate(over="ignore"):
            far = self.origin + np.array(self.shape_xyz) * self.voxel_size
        if not np.all(np.isfinite(far)):
            raise InputError("origin and voxel size put the field beyond finite coordinates")
        self.normalisation = normalisation
        self.map_id = map_id
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.chunk_points = DEFAULT_CHUNK_POINTS
        self.grid_chunk_points = DEFAULT_GRID_CHUNK_POINTS

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
        # The box test runs chunk by chunk too: no whole-size masks or index arrays.
        for start in range(0, len(pts), self.chunk_points):
            chunk = pts[start : start + self.chunk_points]
            inside = self.contains(chunk)
            if inside.all():
                out[start : start + len(chunk)] = self._evaluate(chunk)
            elif inside.any():
                out[start + np.flatnonzero(inside)] = self._evaluate(chunk[inside])
        return out

    def get_densities(self, points: Any) -> np.ndarray:
        """Normalised density ``(n,)`` at points ``(n, 3)`` Å; NaN outside the box."""
        return self.get_values(points)[:, 0]

    def get_gradients(self, points: Any) -> np.ndarray:
        """Gradient ``(n, 3)`` in density per Å at points ``(n, 3)`` Å; NaN outside the box."""
        return self.get_values(points)[:, 1:]

    def get_hessians(self, points: Any) -> np.ndarray:
        """Hessian of the density at points.

        points: ``(n, 3)`` x, y, z in Å. Returns ``(n, 3, 3)`` float64 second derivatives in
        density per Å², rows and columns in x, y, z order; NaN outside the box. Fields with an
        analytic second derivative override :meth:`_evaluate_hessians`; the default takes
        central differences of the (analytic or autograd) gradient.
        """
        pts = as_points(points)
        out = np.full((len(pts), 3, 3), np.nan, dtype=np.float64)
        for start in range(0, len(pts), self.chunk_points):
            chunk = pts[start : start + self.chunk_points]
            inside = self.contains(chunk)
            if inside.any():
                out[start + np.flatnonzero(inside)] = self._evaluate_hessians(chunk[inside])
        return out

    #: Step (in voxels) of the central differences behind the default Hessian.
    HESSIAN_STEP_VOXELS = 0.05

    def _evaluate_hessians(self, points: np.ndarray) -> np.ndarray:
        """Hessians ``(n, 3, 3)`` at points inside the box: central differences of the
        gradient with a step of :attr:`HESSIAN_STEP_VOXELS` voxels, kept inside the box (a
        one-sided difference at the faces), then symmetrised."""
        lo, hi = self.bounds
        hess = np.empty((len(points), 3, 3), dtype=np.float64)
        for axis in range(3):
            h = self.HESSIAN_STEP_VOXELS * float(self.voxel_size[axis])
            plus, minus = points.copy(), points.copy()
            plus[:, axis] = np.minimum(points[:, axis] + h, hi[axis])
            minus[:, axis] = np.maximum(points[:, axis] - h, lo[axis])
            width = plus[:, axis] - minus[:, axis]
            width[width <= 0] = np.nan
            g_plus = self.get_values(plus)[:, 1:].astype(np.float64)
            g_minus = self.get_values(minus)[:, 1:].astype(np.float64)
            hess[:, :, axis] = (g_plus - g_minus) / width[:, None]
        return 0.5 * (hess + hess.transpose(0, 2, 1))

    # ------------------------------------------------------------------ grids
    def grid_axes(
        self, step_x: float, step_y: float | None = None, step_z: float | None = None
    ) -> list[np.ndarray]:
        """World coordinates (Å) along x, y, z of a uniform grid over the box from ``origin``."""
        steps = [step_x, step_x if step_y is None else step_y, step_x if step_z is None else step_z]
        lo, hi = self.bounds
        counts = []
        for s in steps:
            try:
                s = float(s)
            except (TypeError, ValueError) as exc:
                raise InputError(f"grid step must be a positive number of Å, got {s!r}") from exc
            if not np.isfinite(s) or s <= 0:
                raise InputError(f"grid step must be a positive number of Å, got {s!r}")
        steps = [float(s) for s in steps]
        with np.errstate(over="ignore"):
            for s, a, b in zip(steps, lo, hi, strict=True):
                n = np.floor((b - a) / s + 1e-6) + 1  # float: a tiny step must not overflow
                counts.append(n)
            total = float(np.prod(counts))
        # Check the size before anything is allocated (a tiny step could ask for 10^30 points).
        check_voxel_count(
            int(total) if np.isfinite(total) and total < 2**62 else 2**62,
            "the sampling grid",
            self.max_voxels,
        )
        return [a + s * np.arange(int(n)) for s, a, n in zip(steps, lo, counts, strict=True)]

    def _grid_planes(self, n_x: int, n_y: int, chunk_points: int | None = None) -> int:
        """z-planes per slab so a slab holds about ``chunk_points`` points."""
        return max(1, (chunk_points or self.chunk_points) // (n_x * n_y))

    @staticmethod
    def _slab_points(ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
        """Points ``(len(az)*len(ay)*len(ax), 3)`` of a grid slab, in (z, y, x) C order."""
        zz, yy, xx = np.meshgrid(az, ay, ax, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)

    def iter_grid_chunks(
        self, step_x: float, step_y: float | None = None, step_z: float | None = None
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(z_slice, points)`` for consecutive z-slabs of the grid, each slab's points
        ``(m, 3)`` Å in ``(z, y, x)`` C order, with about ``chunk_points`` points a slab."""
        ax, ay, az = self.grid_axes(step_x, step_y, step_z)
        planes = self._grid_planes(len(ax), len(ay))
        for z0 in range(0, len(az), planes):
            zs = az[z0 : z0 + planes]
            yield slice(z0, z0 + len(zs)), self._slab_points(ax, ay, zs)

    def _grid_slab_densities(self, ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
        """Densities ``(len(az), len(ay), len(ax))`` on a grid slab inside the box.

        Fields with a faster evaluation on regular grids (separable splines, batched
        networks) override this; the default evaluates the slab's points.
        """
        pts = self._slab_points(ax, ay, az)
        return self._densities_fast(pts).reshape(len(az), len(ay), len(ax))

    def iter_grid_densities(
        self, step_x: float, step_y: float | None = None, step_z: float | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(ax, ay, az_slab, densities (len(az_slab), len(ay), len(ax)))`` slab by slab
        over the uniform grid from ``origin`` (axes in Å), so memory stays bounded."""
        ax, ay, az = self.grid_axes(step_x, step_y, step_z)
        planes = self._grid_planes(len(ax), len(ay), self.grid_chunk_points)
        for z0 in range(0, len(az), planes):
            zs = az[z0 : z0 + planes]
            yield ax, ay, zs, self._grid_slab_densities(ax, ay, zs)

    def sample_values(
        self, step_x: float, step_y: float | None = None, step_z: float | None = None
    ) -> np.ndarray:
        """Values on a uniform grid from ``origin``: ``(nz, ny, nx, 4)`` float32."""
        ax, ay, az = self.grid_axes(step_x, step_y, step_z)
        out = np.empty((len(az), len(ay), len(ax), 4), dtype=np.float32)
        for zslice, pts in self.iter_grid_chunks(step_x, step_y, step_z):
            out[zslice] = self.get_values(pts).reshape(-1, len(ay), len(ax), 4)
        return out

    def sample_densities(
        self, step_x: float, step_y: float | None = None, step_z: float | None = None
    ) -> np.ndarray:
        """Densities on a uniform grid from ``origin``: ``(nz, ny, nx)`` float32."""
        return self.sample_values(step_x, step_y, step_z)[..., 0]

    def sample_gradients(
        self, step_x: float, step_y: float | None = None, step_z: float | None = None
    ) -> np.ndarray:
        """Gradients on a uniform grid from ``origin``: ``(nz, ny, nx, 3)`` float32, per Å."""
        return self.sample_values(step_x, step_y, step_z)[..., 1:]

    def sample_points(
        self,
        step_x: float,
        step_y: float | None = None,
        step_z: float | None = None,
        *,
        density_threshold: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grid points whose density is ``>= density_threshold``.

        Returns ``(points (m, 3) Å, values (m, 4))``, processed slab by slab so memory is
        bounded by the number of points kept.
        """
        kept_pts, kept_vals = [], []
        for ax, ay, zs, dens in self.iter_grid_densities(step_x, step_y, step_z):
            iz, iy, ix = np.nonzero(dens >= density_threshold)
            if len(iz):
                pts = np.stack([ax[ix], ay[iy], zs[iz]], axis=1)
                kept_pts.append(pts)
                kept_vals.append(self.get_values(pts))
        if not kept_pts:
            return np.zeros((0, 3)), np.zeros((0, 4), dtype=np.float32)
        return np.concatenate(kept_pts), np.concatenate(kept_vals)

    def _densities_fast(self, points: np.ndarray) -> np.ndarray:
        """Densities only, at points inside the box; subclasses may skip the gradient."""
        return self.get_values(points)[:, 0]

    # ------------------------------------------------------------------ resampling
    def to_voxel_density_map(self, voxel_size: Any = None) -> VoxelMap:
        """Resample the field on a grid of ``voxel_size`` Å (default: the field's own)."""
        vs = (
            self.voxel_size
            if voxel_size is None
            else np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
        )
        ax, ay, az = self.grid_axes(*vs)
        data = np.empty((len(az), len(ay), len(ax)), dtype=np.float32)
        z0 = 0
        for _, _, zs, dens in self.iter_grid_densities(*vs):
            data[z0 : z0 + len(zs)] = dens
            z0 += len(zs)
        return VoxelMap(
            data=data,
            voxel_size=vs,
            origin=self.origin,
            map_id=self.map_id,
            normalisation=self.normalisation,
        )

    def save_as_voxel_map(
        self, path: str | os.PathLike, voxel_size: Any = None, *, overwrite: bool = False
    ) -> Path:
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
    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays a field file stores, by name (see :meth:`save`)."""

    def save(
        self, path: str | os.PathLike, *, overwrite: bool = False, float16: bool = False
    ) -> Path:
        """Write the field as a ``.neural`` file (safetensors + JSON metadata), atomically."""
        return write_field_file(
            path, self.file_metadata(), self.tensors(), overwrite=overwrite, float16=float16
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> DensityField:
        """Load a field of this kind written by :meth:`save` (never runs code from the file)."""
        header, tensors = read_field_file(path)
        return cls.from_file_contents(header, tensors, path)

    @classmethod
    @abc.abstractmethod
    def from_file_contents(
        cls, header: dict[str, Any], tensors: dict[str, np.ndarray], path: str | os.PathLike
    ) -> DensityField:
        """Build from a file's header and tensors; :class:`FieldFormatError` if inconsistent."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(map_id={self.map_id!r}, shape_xyz={self.shape_xyz}, "
            f"voxel_size={self.voxel_size.round(4).tolist()}, "
            f"origin={self.origin.round(3).tolist()})"
        )


class VolumeField(DensityField):
    """A field computed from the normalised voxel volume it keeps (``volume`` ``(nz, ny,
    nx)``), whose file stores that volume: the spline, trilinear and Fourier fields.
    Subclasses take the volume (and their options) in ``__init__`` and call this one first."""

    def __init__(self, volume: VoxelMap, metadata: dict[str, Any]) -> None:
        if volume.normalisation is None:
            volume = volume.normalised()
        super().__init__(
            shape_xyz=volume.shape_xyz,
            voxel_size=volume.voxel_size,
            origin=volume.origin,
            normalisation=volume.normalisation,
            map_id=volume.map_id,
            metadata=metadata,
        )
        self.volume = volume.data

    @classmethod
    def from_voxel_map(
        cls,
        path: str | os.PathLike,
        contour: float | None = None,
        *,
        margin_A: float = 5.0,
        max_voxels: int | None = None,
        **options: Any,
    ) -> VolumeField:
        """Read, normalise and (with ``contour``) crop a map file, then build the field."""
        return cls(
            load_normalised(path, contour=contour, margin_A=margin_A, max_voxels=max_voxels),
            **options,
        )

    @classmethod
    def from_voxel_data(
        cls,
        data: VoxelMap | np.ndarray,
        voxel_size: Any = 1.0,
        origin: Any = 0.0,
        *,
        map_id: str = "",
        **options: Any,
    ) -> VolumeField:
        """Build from a :class:`VoxelMap` or an array ``(nz, ny, nx)`` (normalised here)."""
        return cls(as_voxel_map(data, voxel_size, origin, map_id), **options)

    def tensors(self) -> dict[str, np.ndarray]:
        """The normalised volume (anything derived from it is recomputed on load)."""
        return {"volume": self.volume}

    @classmethod
    def from_file_contents(
        cls, header: dict[str, Any], tensors: dict[str, np.ndarray], path: str | os.PathLike
    ) -> VolumeField:
        return cls(volume_from_file(cls.kind, header, tensors, path))
