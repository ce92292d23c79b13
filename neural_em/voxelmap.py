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
import warnings
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from neural_em.atomic import atomic_path
from neural_em.errors import InputError, MapFormatError, SizeLimitError

logger = logging.getLogger(__name__)

#: Default largest map (voxels) that is read; raise with ``max_voxels=`` / ``--max-voxels`` or
#: the environment variable ``NEURAL_EM_MAX_VOXELS``.
DEFAULT_MAX_VOXELS = 2**28

_FLOAT_MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


def max_voxels_limit(max_voxels: int | None = None) -> int:
    """The voxel-count limit in force: the argument, else ``NEURAL_EM_MAX_VOXELS``, else default."""
    if max_voxels is not None:
        return int(max_voxels)
    env = os.environ.get("NEURAL_EM_MAX_VOXELS")
    if env:
        try:
            return int(float(env))
        except ValueError as exc:
            raise InputError(f"NEURAL_EM_MAX_VOXELS={env!r} is not a number") from exc
    return DEFAULT_MAX_VOXELS


def check_voxel_count(n_voxels: int, what: str, max_voxels: int | None = None,
                      path: str | os.PathLike | None = None) -> None:
    """Raise :class:`SizeLimitError` if ``n_voxels`` exceeds the limit in force."""
    limit = max_voxels_limit(max_voxels)
    if n_voxels > limit:
        raise SizeLimitError(
            f"{what} has {n_voxels} voxels, more than the limit of {limit} "
            "(raise it with --max-voxels or NEURAL_EM_MAX_VOXELS)",
            path,
        )


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
        info = Normalisation(
            original_min=float(raw.min()),
            original_max=float(raw.max()),
            clip_min=cmin,
            clip_max=cmax,
            mean=float(norm.mean(dtype=np.float64)),
            std=float(norm.std(dtype=np.float64)),
        )
        return dataclasses.replace(self, data=norm, normalisation=info)

    def crop_to_contour(self, contour: float, *, margin_A: float = 5.0,
                        raw_contour: bool = True) -> VoxelMap:
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
        data = self.data[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]].copy()
        return dataclasses.replace(self, data=data, origin=self.origin + lo * self.voxel_size)


def _as_xyz(value: Any, name: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
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
    """Read an MRC/MAP/CCP4 file (optionally .gz/.bz2) into a :class:`VoxelMap`.

    The header is checked before any data is read: dimensions, mode, axis order, cell and the
    voxel count against ``max_voxels`` (see :func:`max_voxels_limit`). Raises
    :class:`MapFormatError` naming the file and the problem for anything unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFormatError("no such file", path)
    header = _read_header(path)
    nc, nr, ns = (int(header.nx), int(header.ny), int(header.nz))
    if min(nc, nr, ns) < 1:
        raise MapFormatError(f"dimensions must be positive, header says {nc}x{nr}x{ns}", path)
    mode = int(header.mode)
    if mode not in _FLOAT_MODES:
        raise MapFormatError(
            f"unsupported data mode {mode} (supported: 0, 1, 2, 6, 12)", path
        )
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(axes) != [1, 2, 3]:
        raise MapFormatError(f"axis order {axes} is not a permutation of 1, 2, 3", path)
    n_voxels = nc * nr * ns
    check_voxel_count(n_voxels, "map", max_voxels, path)
    if not path.name.lower().endswith((".gz", ".bz2")):
        expected = 1024 + int(header.nsymbt) + n_voxels * np.dtype(_FLOAT_MODES[mode]).itemsize
        size = path.stat().st_size
        if size < expected:
            raise MapFormatError(
                f"file is truncated: header needs {expected} bytes, file has {size}", path
            )
    # Grid sampling and cell, in x, y, z order.
    mxyz = np.array([int(header.mx), int(header.my), int(header.mz)], dtype=np.float64)
    cell = np.array([float(header.cella.x), float(header.cella.y), float(header.cella.z)])
    if not np.all(np.isfinite(cell)) or np.any(cell <= 0) or np.any(mxyz <= 0):
        raise MapFormatError(
            f"cell {cell.tolist()} Å over sampling {mxyz.astype(int).tolist()} gives no "
            "positive voxel size",
            path,
        )
    voxel_size = cell / mxyz
    # Start indices are per column/row/section; permute them to x, y, z.
    starts_crs = (int(header.nxstart), int(header.nystart), int(header.nzstart))
    start_xyz = np.zeros(3)
    for k in range(3):
        start_xyz[axes[k] - 1] = starts_crs[k]
    origin_words = np.array(
        [float(header.origin.x), float(header.origin.y), float(header.origin.z)]
    )
    if np.all(np.isfinite(origin_words)) and np.any(origin_words != 0):
        origin = origin_words
    else:
        origin = start_xyz * voxel_size
    data = _read_data(path)
    if data.shape != (ns, nr, nc):
        raise MapFormatError(f"data shape {data.shape} does not match header {ns, nr, nc}", path)
    # data is [section, row, column]; reorder to [z, y, x].
    array_axes = (axes[2], axes[1], axes[0])  # map axis (1=x) held by array axis 0, 1, 2
    perm = [array_axes.index(t) for t in (3, 2, 1)]
    data = np.ascontiguousarray(np.transpose(data, perm), dtype=np.float32)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise MapFormatError(f"map holds {bad} NaN or infinite values", path)
    return VoxelMap(
        data=data,
        voxel_size=voxel_size,
        origin=origin,
        axis_order=axes,
        map_id=_map_id_from_path(path),
        source=str(path),
    )


def _read_header(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
                header = mrc.header.copy()
    except Exception as exc:  # mrcfile raises many types for broken files
        raise MapFormatError(f"not a readable MRC/CCP4 map ({_short(exc)})", path) from exc
    if header is None:
        raise MapFormatError("not a readable MRC/CCP4 map (no header)", path)
    return header


def _read_data(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=True) as mrc:
                if mrc.data is None:
                    raise MapFormatError("map data could not be read (truncated?)", path)
                data = np.array(mrc.data, dtype=np.float32)
    except MapFormatError:
        raise
    except Exception as exc:
        raise MapFormatError(f"map data could not be read ({_short(exc)})", path) from exc
    if data.ndim == 2:
        data = data[np.newaxis]
    return data


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


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


def load_normalised(path: str | os.PathLike, *, contour: float | None = None,
                    margin_A: float = 5.0, max_voxels: int | None = None) -> VoxelMap:
    """Read a map, normalise it as in the study and optionally crop it to a contour level."""
    vmap = read_map(path, max_voxels=max_voxels).normalised()
    if contour is not None:
        vmap = vmap.crop_to_contour(contour, margin_A=margin_A)
        logger.info("cropped %s to %s voxels (x, y, z) at contour %g", path, vmap.shape_xyz,
                    contour)
    return vmap
