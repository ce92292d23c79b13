"""Voxel maps: reading and writing MRC/CCP4 files, normalisation and cropping.

Conventions (one inside the library, converted here and only here):

* ``data`` is ``(nz, ny, nx)`` float32, C-order: ``data[z, y, x]``.
* ``voxel_size`` and ``origin`` are ``(3,)`` float64 arrays in x, y, z order, in Å.
* ``origin`` is the world position of the first voxel ``data[0, 0, 0]``; voxel ``(i, j, k)``
  (x, y, z indices) sits at ``origin + (i, j, k) * voxel_size``.

Headers are read the way ChimeraX places maps: axis order MAPC/MAPR/MAPS permuted to x, y, z;
voxel size from the cell over MX/MY/MZ; world origin from the ORIGIN words when they are non-zero
and finite, otherwise from NXSTART/NYSTART/NZSTART times the voxel size.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.utils
import numpy as np

from neural_em.atomic import atomic_path
from neural_em.errors import InputError, MapFormatError
from neural_em.mrcread import read_map_data, read_map_header

logger = logging.getLogger(__name__)


def mean_std(data: np.ndarray, *, slab_values: int = 1 << 22) -> tuple[float, float]:
    """Mean and standard deviation of an array, in float64, slab by slab along axis 0.

    ``ndarray.std(dtype=float64)`` makes a float64 copy of the whole array (8 bytes a voxel);
    this keeps the extra memory to about ``slab_values`` values.
    """
    flat = data.reshape(len(data), -1) if data.ndim > 1 else data.reshape(-1, 1)
    n = flat.size
    if n == 0:
        return float("nan"), float("nan")
    rows = max(1, slab_values // max(1, flat.shape[1]))
    total = 0.0
    for i in range(0, len(flat), rows):
        total += float(flat[i : i + rows].sum(dtype=np.float64))
    mean = total / n
    sq = 0.0
    for i in range(0, len(flat), rows):
        diff = flat[i : i + rows].astype(np.float64) - mean
        sq += float(np.dot(diff.ravel(), diff.ravel()))
    return mean, float(np.sqrt(sq / n))


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """How a map was normalised: clip negatives to 0, then min-max to [0, 1].

    ``normalised = (max(raw, 0) - clip_min) / (clip_max - clip_min)``. ``original_min`` and
    ``original_max`` are the raw map's extremes; ``mean`` and ``std`` are those of the
    normalised map.
    """

    original_min: float
    original_max: float
    clip_min: float
    clip_max: float
    mean: float
    std: float

    def to_raw(self, values: np.ndarray) -> np.ndarray:
        """Normalised densities back to the raw scale (for values that were not clipped)."""
        return np.asarray(values) * (self.clip_max - self.clip_min) + self.clip_min

    def to_normalised(self, raw: np.ndarray) -> np.ndarray:
        """Raw densities (e.g. a contour level) to the normalised scale, clipped like the map."""
        return (np.maximum(np.asarray(raw, dtype=np.float64), 0.0) - self.clip_min) / (
            self.clip_max - self.clip_min
        )

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        try:
            values = {f.name: float(d[f.name]) for f in dataclasses.fields(cls)}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"normalisation record is incomplete or not numeric: {d!r}") from exc
        if not all(np.isfinite(list(values.values()))):
            raise InputError("normalisation record holds non-finite values")
        return cls(**values)


@dataclasses.dataclass
class VoxelMap:
    """A voxel map: ``data[z, y, x]`` float32 with voxel size and origin in Å (x, y, z)."""

    data: np.ndarray
    voxel_size: np.ndarray
    origin: np.ndarray
    axis_order: tuple[int, int, int] = (1, 2, 3)
    map_id: str = ""
    normalisation: Normalisation | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.data = np.ascontiguousarray(self.data, dtype=np.float32)
        if self.data.ndim != 3 or min(self.data.shape) < 1:
            raise InputError(f"map data must be a non-empty 3D array, got shape {self.data.shape}")
        self.voxel_size = _as_xyz(self.voxel_size, "voxel_size")
        if np.any(self.voxel_size <= 0):
            raise InputError(f"voxel_size must be positive, got {self.voxel_size.tolist()}")
        self.origin = _as_xyz(self.origin, "origin")
        with np.errstate(over="ignore"):
            far = self.origin + np.array(self.shape_xyz) * self.voxel_size
        if not np.all(np.isfinite(far)):
            raise InputError("origin and voxel size put the map beyond finite coordinates")

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along x, y, z."""
        nz, ny, nx = self.data.shape
        return (nx, ny, nz)

    @property
    def extent_max(self) -> np.ndarray:
        """World position (Å, x, y, z) of the last voxel."""
        return self.origin + (np.array(self.shape_xyz) - 1) * self.voxel_size

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(n, 3)`` in x, y, z order to world points ``(n, 3)`` in Å."""
        return self.origin + np.asarray(ijk, dtype=np.float64) * self.voxel_size

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """World points ``(n, 3)`` Å to fractional voxel indices ``(n, 3)`` in x, y, z order."""
        return (np.asarray(points, dtype=np.float64) - self.origin) / self.voxel_size

    def grid_points(self) -> np.ndarray:
        """World positions of every voxel, ``(nz*ny*nx, 3)`` in x, y, z, in ``data.ravel()`` order."""
        nx, ny, nz = self.shape_xyz
        z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        ijk = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
        return self.index_to_world(ijk)

    def value_at(self, points: np.ndarray) -> np.ndarray:
        """Density at the nearest voxel of each point ``(n, 3)`` Å; NaN outside the box."""
        idx = np.rint(self.world_to_index(np.atleast_2d(points))).astype(np.int64)
        nx, ny, nz = self.shape_xyz
        inside = np.all((idx >= 0) & (idx < [nx, ny, nz]), axis=1)
        out = np.full(len(idx), np.nan, dtype=np.float64)
        i = idx[inside]
        out[inside] = self.data[i[:, 2], i[:, 1], i[:, 0]]
        return out

    def normalised(self) -> VoxelMap:
        """A copy normalised as in the study: negatives to 0, then min-max to [0, 1].

        Raises :class:`InputError` for a map with no positive range (constant or all-zero).
        """
        raw = self.data
        if not np.all(np.isfinite(raw)):
            raise MapFormatError("map holds NaN or infinite values", self.source or None)
        clipped = np.maximum(raw, 0.0)
        cmin, cmax = float(clipped.min()), float(clipped.max())
        if not cmax > cmin:
            raise MapFormatError(
                f"map has no positive density range (all values <= 0 or constant at {cmax:g}): "
                "nothing to normalise",
                self.source or None,
            )
        norm = ((clipped - cmin) / (cmax - cmin)).astype(np.float32)
        del clipped
        mean, std = mean_std(norm)
        info = Normalisation(
            original_min=float(raw.min()),
            original_max=float(raw.max()),
            clip_min=cmin,
            clip_max=cmax,
            mean=mean,
            std=std,
        )
        return dataclasses.replace(self, data=norm, normalisation=info)

    def crop_to_contour(
        self, contour: float, *, margin_A: float = 5.0, raw_contour: bool = True
    ) -> VoxelMap:
        """The box holding every voxel ``>= contour`` plus ``margin_A`` Å on each side.

        ``contour`` is on the raw density scale (the EMDB recommended level) when
        ``raw_contour`` is True and this map is normalised; otherwise on this map's scale.
        """
        level = float(contour)
        if not np.isfinite(level):
            raise InputError(f"contour must be finite, got {contour!r}")
        if raw_contour and self.normalisation is not None:
            level = float(self.normalisation.to_normalised(level))
        mask = self.data >= level
        if not mask.any():
            raise InputError(
                f"no voxel reaches the contour level {contour:g} "
                f"(map maximum {self.data.max():g} on this scale)",
                self.source or None,
            )
        margin = np.ceil(float(margin_A) / self.voxel_size[::-1]).astype(int)  # z, y, x
        lo, hi = [], []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            present = np.flatnonzero(mask.any(axis=other))
            lo.append(max(0, present[0] - margin[axis]))
            hi.append(min(self.data.shape[axis], present[-1] + 1 + margin[axis]))
        return self.subbox(lo[::-1], hi[::-1])

    def subbox(self, lo_xyz: Any, hi_xyz: Any) -> VoxelMap:
        """The sub-box of voxels ``lo <= index < hi`` (x, y, z voxel indices) as a new map."""
        lo = np.asarray(lo_xyz, dtype=int)
        hi = np.asarray(hi_xyz, dtype=int)
        data = self.data[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]].copy()
        return dataclasses.replace(self, data=data, origin=self.origin + lo * self.voxel_size)


def as_voxel_map(
    data: VoxelMap | np.ndarray, voxel_size: Any = 1.0, origin: Any = 0.0, map_id: str = ""
) -> VoxelMap:
    """``data`` itself if it is a :class:`VoxelMap`, else a map of the array ``(nz, ny, nx)``
    with ``voxel_size`` and ``origin`` (x, y, z, Å)."""
    if isinstance(data, VoxelMap):
        return data
    return VoxelMap(data=np.asarray(data), voxel_size=voxel_size, origin=origin, map_id=map_id)


def _as_xyz(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be one or three numbers (x, y, z), got {value!r}") from exc
    if arr.shape not in ((), (1,), (3,)):
        raise InputError(f"{name} must be one or three numbers (x, y, z), got shape {arr.shape}")
    arr = np.broadcast_to(arr, (3,)).copy()
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def _map_id_from_path(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".bz2", ".mrc", ".map", ".ccp4", ".mrcs"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def read_map(path: str | os.PathLike, *, max_voxels: int | None = None) -> VoxelMap:
    """Read an MRC/MAP/CCP4 file (optionally gzip/bzip2-compressed) into a :class:`VoxelMap`.

    The header is checked before any data is read (:func:`read_map_header`). Memory is bounded
    by what the file holds: an uncompressed file must be long enough for its header's claim
    before anything is allocated, and a compressed one is decompressed in chunks, at most the
    size the header claims. Raises :class:`MapFormatError` naming the file and the problem for
    anything unusable.
    """
    path = Path(path)
    header = read_map_header(path, max_voxels=max_voxels)
    nc, nr, ns = header.dims_crs
    data = read_map_data(path, header.compression, header.data_offset, header.dtype, (ns, nr, nc))
    # data is [section, row, column]; reorder to [z, y, x].
    axes = header.axes
    array_axes = (axes[2], axes[1], axes[0])  # map axis (1=x) held by array axis 0, 1, 2
    perm = [array_axes.index(t) for t in (3, 2, 1)]
    data = np.ascontiguousarray(np.transpose(data, perm), dtype=np.float32)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise MapFormatError(f"map holds {bad} NaN or infinite values", path)
    return VoxelMap(
        data=data,
        voxel_size=header.voxel_size,
        origin=header.origin,
        axis_order=axes,
        map_id=_map_id_from_path(path),
        source=str(path),
    )


def write_map(
    path: str | os.PathLike,
    voxel_map: VoxelMap | np.ndarray,
    *,
    voxel_size: Any = None,
    origin: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write a map as MRC (mode 2), atomically.

    The header gets ORIGIN = world position of the first voxel, start values 0, axis order
    1, 2, 3, and passes ``mrcfile.validate``. Pass a :class:`VoxelMap`, or an array
    ``(nz, ny, nx)`` with ``voxel_size`` and ``origin`` (x, y, z, Å).
    """
    if not isinstance(voxel_map, VoxelMap):
        voxel_map = VoxelMap(
            data=np.asarray(voxel_map),
            voxel_size=1.0 if voxel_size is None else voxel_size,
            origin=0.0 if origin is None else origin,
        )
    out = Path(path)
    with atomic_path(out, overwrite=overwrite) as tmp:
        with mrcfile.new(tmp, overwrite=True, compression=_compression(out)) as mrc:
            mrc.set_data(np.ascontiguousarray(voxel_map.data, dtype=np.float32))
            mrc.voxel_size = tuple(float(v) for v in voxel_map.voxel_size)
            mrc.header.origin = tuple(float(v) for v in voxel_map.origin)
            mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
            mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 1, 2, 3
            mrc.update_header_stats()
    return out


def _compression(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith(".bz2"):
        return "bzip2"
    return None


def load_normalised(
    path: str | os.PathLike,
    *,
    contour: float | None = None,
    margin_A: float = 5.0,
    max_voxels: int | None = None,
) -> VoxelMap:
    """Read a map, normalise it as in the study and optionally crop it to a contour level."""
    vmap = read_map(path, max_voxels=max_voxels).normalised()
    if contour is not None:
        vmap = vmap.crop_to_contour(contour, margin_A=margin_A)
        logger.info(
            "cropped %s to %s voxels (x, y, z) at contour %g", path, vmap.shape_xyz, contour
        )
    return vmap
