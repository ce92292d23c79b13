"""Bounded reading of MRC/MAP/CCP4 files (optionally gzip/bzip2-compressed): the header,
checked before anything is allocated (:func:`read_map_header`, the one MRC header reader of the
package), and the data block, decompressed in chunks up to the size the header claims
(:func:`read_map_data`). :func:`neural_em.voxelmap.read_map` puts them together.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.utils
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from neural_em.errors import InputError, MapFormatError, SizeLimitError

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


def check_voxel_count(
    n_voxels: int, what: str, max_voxels: int | None = None, path: str | os.PathLike | None = None
) -> None:
    """Raise :class:`SizeLimitError` if ``n_voxels`` exceeds the limit in force."""
    limit = max_voxels_limit(max_voxels)
    if n_voxels > limit:
        raise SizeLimitError(
            f"{what} has {n_voxels} voxels, more than the limit of {limit} "
            "(raise it with --max-voxels or NEURAL_EM_MAX_VOXELS)",
            path,
        )


@dataclasses.dataclass(frozen=True)
class MapHeader:
    """An MRC/CCP4 header, checked by :func:`read_map_header`: the grid in file order
    (columns, rows, sections) and the placement in x, y, z (Å)."""

    compression: str | None  #: "gzip", "bzip2" or None, from the file's first bytes
    dims_crs: tuple[int, int, int]  #: NX, NY, NZ: columns, rows, sections
    axes: tuple[int, int, int]  #: MAPC, MAPR, MAPS: the map axis (1 = x) of each
    mode: int
    dtype: np.dtype  #: the data's dtype, byte order included
    data_offset: int  #: 1024 + NSYMBT: where the data block starts (decompressed)
    voxel_size: np.ndarray
    origin: np.ndarray

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along x, y, z."""
        shape = [0, 0, 0]
        for k, axis in enumerate(self.axes):
            shape[axis - 1] = self.dims_crs[k]
        return (shape[0], shape[1], shape[2])

    @property
    def voxels(self) -> int:
        return math.prod(self.dims_crs)

    @property
    def file_bytes(self) -> int:
        """Bytes (decompressed) the header promises: header, extended header and data."""
        return self.data_offset + self.voxels * self.dtype.itemsize


def read_map_header(path: str | os.PathLike, *, max_voxels: int | None = None) -> MapHeader:
    """Read and check the header of an MRC/MAP/CCP4 file (optionally gzip/bzip2-compressed).

    The one MRC header reader of the package. Only the 1024-byte header is read (never the
    extended header, whose size NSYMBT a hostile file sets at will): dimensions, mode, axis
    order, the voxel count against ``max_voxels`` (see :func:`max_voxels_limit`), cell and
    placement; an uncompressed file must be long enough for the header's claim. Raises
    :class:`MapFormatError` (or :class:`SizeLimitError`) naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFormatError("no such file", path)
    compression = sniff_compression(path)
    header = _read_header(path, compression)
    nc, nr, ns = (int(header.nx), int(header.ny), int(header.nz))
    if min(nc, nr, ns) < 1:
        raise MapFormatError(f"dimensions must be positive, header says {nc}x{nr}x{ns}", path)
    mode = int(header.mode)
    if mode not in _FLOAT_MODES:
        raise MapFormatError(f"unsupported data mode {mode} (supported: 0, 1, 2, 6, 12)", path)
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(axes) != [1, 2, 3]:
        raise MapFormatError(f"axis order {axes} is not a permutation of 1, 2, 3", path)
    nsymbt = int(header.nsymbt)
    if nsymbt < 0:
        raise MapFormatError(f"extended header size (NSYMBT) is negative: {nsymbt}", path)
    n_voxels = nc * nr * ns
    check_voxel_count(n_voxels, "map", max_voxels, path)
    dtype = np.dtype(_FLOAT_MODES[mode]).newbyteorder(header.mode.dtype.byteorder)
    data_offset = _HEADER_BYTES + nsymbt
    if compression is None:
        expected = data_offset + n_voxels * dtype.itemsize
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
    if not np.all(np.isfinite(voxel_size)) or np.any(voxel_size <= 0):
        raise MapFormatError(f"voxel size {voxel_size.tolist()} is not positive and finite", path)
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
    return MapHeader(
        compression=compression,
        dims_crs=(nc, nr, ns),
        axes=axes,
        mode=mode,
        dtype=dtype,
        data_offset=data_offset,
        voxel_size=voxel_size,
        origin=origin,
    )


_HEADER_BYTES = 1024


#: Bytes read at a time from a compressed map: memory grows only as data actually arrives.
_READ_CHUNK = 1 << 24


#: Bytes after the data block of a compressed map read to reach the stream's checksum.
_TRAILING_CHECK_BYTES = 1 << 20


_STREAM_ERRORS = (OSError, EOFError, ValueError, zlib.error)


def sniff_compression(path: Path) -> str | None:
    """``"gzip"``, ``"bzip2"`` or None, from the file's first bytes (not its name)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(3)
    except OSError as exc:
        raise MapFormatError(f"cannot be opened ({short_error(exc)})", path) from exc
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic == b"BZh":
        return "bzip2"
    return None


def _open_stream(path: Path, compression: str | None) -> Any:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bzip2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def _read_up_to(stream: Any, n_bytes: int) -> np.ndarray:
    """At most ``n_bytes`` of ``stream`` as a uint8 array (fewer at the end of the stream).

    The array is reserved at once but filled chunk by chunk; untouched pages of a large
    ``np.empty`` are never made resident, so memory follows what the stream really holds, not
    what a header claims. A short stream gives a shorter copy.
    """
    out = np.empty(n_bytes, dtype=np.uint8)
    view = memoryview(out)
    got = 0
    while got < n_bytes:
        n = stream.readinto(view[got : min(n_bytes, got + _READ_CHUNK)])
        if not n:
            break
        got += n
    view.release()
    return out if got == n_bytes else out[:got].copy()


def _skip(stream: Any, n_bytes: int) -> int:
    """Skip up to ``n_bytes`` of ``stream`` in bounded chunks; returns the bytes skipped."""
    skipped = 0
    while skipped < n_bytes:
        chunk = stream.read(min(_READ_CHUNK, n_bytes - skipped))
        if not chunk:
            break
        skipped += len(chunk)
    return skipped


def _read_header(path: Path, compression: str | None = None) -> Any:
    """The 1024-byte MRC header as a numpy record (byte order from the machine stamp); only
    :func:`read_map_header` calls it.

    Parsed with mrcfile's header layout but without mrcfile's reader, which allocates the
    extended header (up to 2 GB, from NSYMBT) and decompresses whole files before any check.
    """
    try:
        with _open_stream(path, compression) as stream:
            head = _read_up_to(stream, _HEADER_BYTES)
    except _STREAM_ERRORS as exc:
        what = f"{compression} stream is corrupt" if compression else "cannot be read"
        raise MapFormatError(
            f"not a readable MRC/CCP4 map ({what}: {short_error(exc)})", path
        ) from exc
    if len(head) < _HEADER_BYTES:
        raise MapFormatError(
            f"not a readable MRC/CCP4 map (file has {len(head)} bytes, an MRC header "
            f"needs {_HEADER_BYTES})",
            path,
        )
    header = np.frombuffer(head.tobytes(), dtype=HEADER_DTYPE).reshape(()).view(np.recarray)
    if bytes(header.map)[:3] != b"MAP":
        raise MapFormatError(
            "not an MRC/CCP4 map (no 'MAP' identifier at byte 208 of the header)", path
        )
    try:
        byte_order = mrcfile.utils.byte_order_from_machine_stamp(header.machst)
    except ValueError:
        byte_order = "<"  # unusual machine stamp: try little-endian, as mrcfile does
    header = header.view(header.dtype.newbyteorder(byte_order))
    if int(header.mode) not in _FLOAT_MODES:
        swapped = header.view(header.dtype.newbyteorder())
        if int(swapped.mode) in _FLOAT_MODES:  # machine stamp contradicts the byte order
            header = swapped
    return header


def read_map_data(
    path: Path, compression: str | None, offset: int, dtype: np.dtype, shape: tuple[int, int, int]
) -> np.ndarray:
    """The data block ``shape`` (sections, rows, columns) of ``dtype`` starting at ``offset``."""
    n_bytes = math.prod(shape) * dtype.itemsize
    try:
        with _open_stream(path, compression) as stream:
            if compression is None:
                stream.seek(offset)
                skipped = offset
            else:
                skipped = _skip(stream, offset)
            raw = _read_up_to(stream, n_bytes) if skipped == offset else np.empty(0, dtype=np.uint8)
            if compression is not None and len(raw) == n_bytes:
                # Read on to the end of the stream (bounded) so its checksum is verified:
                # a corrupt compressed map must not load with silently altered data.
                _skip(stream, _TRAILING_CHECK_BYTES)
    except MemoryError as exc:
        raise MapFormatError(
            f"cannot reserve {n_bytes} bytes for the data block the header claims "
            f"({'x'.join(str(n) for n in shape[::-1])} voxels)",
            path,
        ) from exc
    except _STREAM_ERRORS as exc:
        what = f"{compression} stream is corrupt" if compression else "read failed"
        raise MapFormatError(
            f"map data could not be read ({what}: {short_error(exc)})", path
        ) from exc
    if len(raw) < n_bytes:
        where = "decompressed data" if compression else "file"
        raise MapFormatError(
            f"file is truncated: header needs {offset + n_bytes} bytes, the {where} has "
            f"{skipped + len(raw)}",
            path,
        )
    return raw.view(dtype).reshape(shape)


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
