"""The ``.neural`` file: tensors in safetensors, metadata as JSON. Loading never runs code.

Layout: a safetensors file whose ``__metadata__`` holds ``format = "neural-em"``,
``format_version`` and ``header``, a JSON object (field kind, map id, voxel grid, normalisation
and the kind's own records). Files that are truncated, corrupt, of another format, or pickles
(the original study's ``.neural`` was a tar of pickled torch files) are refused with
:class:`~neural_em.errors.FieldFormatError`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from neural_em.atomic import atomic_write_bytes, check_output_path
from neural_em.errors import FieldFormatError, InputError
from neural_em.voxelmap import Normalisation, VoxelMap

FORMAT_NAME = "neural-em"
FORMAT_VERSION = 1
#: Largest safetensors header accepted (bytes): real headers are a few kB.
MAX_HEADER_BYTES = 64 * 1024 * 1024


def write_field_file(
    path: str | os.PathLike,
    header: dict[str, Any],
    tensors: dict[str, np.ndarray],
    *,
    overwrite: bool = False,
    float16: bool = False,
) -> Path:
    """Write tensors and a JSON header as a ``.neural`` file, atomically.

    With ``float16`` every floating tensor is stored as float16 (half the size).
    """
    check_output_path(path, overwrite=overwrite)
    stored = {}
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float16 if float16 else np.float32)
        stored[name] = arr
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "header": json.dumps({**header, "float16": bool(float16)}, allow_nan=False),
    }
    raw = _canonical_header(safetensors.numpy.save(stored, metadata=meta))
    return atomic_write_bytes(path, raw, overwrite=overwrite)


def _canonical_header(raw: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors writes the header from a hash map, so key order (and the file's bytes)
    changes from run to run; sorted keys make equal fields give identical files.
    """
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data block 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]


def sniff_format(head: bytes) -> str | None:
    """Name a foreign format from a file's first bytes (None if it may be safetensors)."""
    if head[:1] == b"\x80" or head[:2] in (b"(d", b"(l", b"}q", b"]q", b"(c") or head[:1] == b"c":
        return "a Python pickle (refused: loading it could run code)"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive such as a torch.save file (use 'neural-em convert')"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive, like the original study's .neural files (use 'neural-em convert')"
    if head[:2] == b"\x1f\x8b":
        return "a gzip file"
    if head[:4] == b"MAP " or (len(head) >= 212 and head[208:212] == b"MAP "):
        return "an MRC map, not a .neural field"
    if head[:1] in (b"{", b"["):
        return "a JSON file, not a .neural field"
    return None


def is_field_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is (or claims to be) a ``.neural`` field rather than a map: by its
    ``.neural`` suffix, else by its first bytes (a safetensors JSON header and no other known
    format). Reads at most 16 bytes; an unreadable file is not a field."""
    path = Path(path)
    if path.suffix == ".neural":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return len(head) > 8 and head[8:9] == b"{" and sniff_format(head) is None


# Complexity over 15: strict reader: one check per header field, in file order.
def read_field_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # noqa: C901
    """Read a ``.neural`` file: ``(header, tensors)``; tensors are float32/int arrays.

    Raises :class:`FieldFormatError` with one clear line for anything that is not a complete,
    valid file of a known format version, and for any non-finite tensor value.
    """
    path = Path(path)
    if not path.is_file():
        raise FieldFormatError("no such file", path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(512)
    n_header = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    looks_safetensors = (
        len(head) > 8 and head[8:9] == b"{" and 0 < n_header <= min(MAX_HEADER_BYTES, size - 8)
    )
    if not looks_safetensors:
        foreign = sniff_format(head)
        if foreign:
            raise FieldFormatError(f"not a neural-em field file: it is {foreign}", path)
        if len(head) > 8 and head[8:9] == b"{":
            raise FieldFormatError("file is truncated (safetensors header cut short)", path)
        raise FieldFormatError(
            "not a neural-em field file (no valid safetensors header; truncated or another format)",
            path,
        )
    with open(path, "rb") as handle:
        handle.seek(8)
        raw_header = handle.read(n_header)
    try:
        st_header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FieldFormatError("corrupt safetensors header (not JSON)", path) from exc
    if not isinstance(st_header, dict):
        raise FieldFormatError("corrupt safetensors header (not a JSON object)", path)
    meta = st_header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FieldFormatError("a safetensors file, but not written by neural-em", path)
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise FieldFormatError(
            f"unknown format version {version!r} (this neural-em reads version {FORMAT_VERSION})",
            path,
        )
    end = 0
    for name, info in st_header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FieldFormatError(f"corrupt tensor record {name!r}", path) from exc
    if 8 + n_header + end > size:
        raise FieldFormatError(
            f"file is truncated: tensors need {8 + n_header + end} bytes, file has {size}", path
        )
    try:
        header = json.loads(meta["header"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise FieldFormatError("metadata header missing or not JSON", path) from exc
    if not isinstance(header, dict):
        raise FieldFormatError("metadata header is not a JSON object", path)
    try:
        tensors = safetensors.numpy.load_file(path)
    except Exception as exc:  # safetensors raises its own error types
        raise FieldFormatError(f"corrupt tensor data ({type(exc).__name__}: {exc})", path) from exc
    out = {}
    for name, arr in tensors.items():
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise FieldFormatError(f"tensor {name!r} holds NaN or infinite values", path)
            arr = arr.astype(np.float32)
        out[name] = arr
    return header, out


def require(
    header: dict[str, Any], key: str, types: type | tuple[type, ...], path: str | os.PathLike
) -> Any:
    """``header[key]`` if present and of ``types``; else :class:`FieldFormatError`."""
    if key not in header:
        raise FieldFormatError(f"metadata lacks {key!r}", path)
    value = header[key]
    if (
        not isinstance(value, types)
        or isinstance(value, bool)
        and bool not in (types if isinstance(types, tuple) else (types,))
    ):
        raise FieldFormatError(
            f"metadata {key!r} has the wrong type ({type(value).__name__})", path
        )
    return value


def volume_from_file(
    kind: str, header: dict[str, Any], tensors: dict[str, np.ndarray], path: str | os.PathLike
) -> VoxelMap:
    """The normalised volume saved by a grid-based field of ``kind`` (spline, trilinear,
    Fourier): tensor ``volume`` ``(nz, ny, nx)`` with the header's grid and normalisation.
    Raises :class:`FieldFormatError` for another kind or inconsistent contents."""
    if header.get("kind") != kind:
        raise FieldFormatError(f"field kind is {header.get('kind')!r}, not {kind!r}", path)
    volume = tensors.get("volume")
    shape_xyz = require(header, "shape_xyz", list, path)
    if volume is None or volume.ndim != 3 or list(volume.shape[::-1]) != shape_xyz:
        raise FieldFormatError("tensor 'volume' missing or not shaped like shape_xyz", path)
    try:
        return VoxelMap(
            data=volume,
            voxel_size=require(header, "voxel_size", list, path),
            origin=require(header, "origin", list, path),
            map_id=str(header.get("map_id", "")),
            normalisation=Normalisation.from_dict(require(header, "normalisation", dict, path)),
        )
    except InputError as exc:
        raise FieldFormatError(exc.message, path) from exc
