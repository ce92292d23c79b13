"""The EMDB and PDB archives: where each file lies, and what an EMDB entry's record says.

No network here (:mod:`neural_em.pipeline.download` fetches and checks the files).

Archive layout (base URLs come from the workflow config, ``download:``):

=========  ==========================================  ==================================
what       URL                                         function
=========  ==========================================  ==================================
map        ``{emdb_base}/structures/EMD-N/map/emd_N.map.gz``   :func:`emdb_map_url`
metadata   ``{emdb_api}/entry/EMD-N`` (JSON)            :func:`emdb_metadata_url`
model      ``{pdb_base}/{pdb}.cif.gz`` (or ``.cif``)    :func:`pdb_mmcif_url`
sequences  ``{fasta_base}/entry/{PDB}``                 :func:`pdb_fasta_url`
=========  ==========================================  ==================================
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from neural_em.errors import InputError

# ----------------------------------------------------------------------------- identifiers


def emdb_number(emd_id: str | int) -> str:
    """The EMDB accession number of ``"EMD-3488"``, ``"emd_3488"``, ``"3488"`` or ``3488``."""
    text = str(emd_id).strip()
    match = re.fullmatch(r"(?:EMD[-_]?)?(\d{4,})", text, flags=re.IGNORECASE)
    if not match:
        raise InputError(f"{emd_id!r} is not an EMDB id (expected e.g. EMD-3488)")
    return match.group(1)


def pdb_code(pdb_id: str) -> str:
    """A PDB id in lower case: 4 characters (``5ni1``) or extended (``pdb_00005ni1``)."""
    text = str(pdb_id).strip().lower()
    if not re.fullmatch(r"[0-9][a-z0-9]{3}|pdb_[0-9a-z]{8}", text):
        raise InputError(f"{pdb_id!r} is not a PDB id (expected e.g. 5ni1)")
    return text


def _join(base: str, *parts: str) -> str:
    if not base:
        raise InputError("empty base URL (set it in the config's download section)")
    return "/".join([base.rstrip("/"), *parts])


def emdb_map_url(emd_id: str | int, *, base: str) -> str:
    """``{base}/structures/EMD-N/map/emd_N.map.gz`` (the EMDB archive's layout)."""
    n = emdb_number(emd_id)
    return _join(base, "structures", f"EMD-{n}", "map", f"emd_{n}.map.gz")


def emdb_metadata_url(emd_id: str | int, *, base: str) -> str:
    """``{base}/entry/EMD-N``: the EMDB REST API's entry record (JSON)."""
    return _join(base, "entry", f"EMD-{emdb_number(emd_id)}")


def pdb_mmcif_url(pdb_id: str, *, base: str, gzipped: bool = True) -> str:
    """``{base}/{pdb}.cif.gz`` (or ``.cif`` with ``gzipped=False``)."""
    return _join(base, f"{pdb_code(pdb_id)}.cif" + (".gz" if gzipped else ""))


def pdb_fasta_url(pdb_id: str, *, base: str) -> str:
    """``{base}/entry/{PDB}``: the entry's sequences as FASTA."""
    return _join(base, "entry", pdb_code(pdb_id).upper())


def open_maybe_gzip(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading bytes, through gzip when it starts with gzip's magic."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def check_json(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a JSON object (e.g. an EMDB API record); raise :class:`InputError` otherwise."""
    path = Path(path)
    try:
        with open_maybe_gzip(path) as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path) from exc
    if not isinstance(data, dict):
        raise InputError(f"JSON holds a {type(data).__name__}, expected an object", path)
    return data


# ----------------------------------------------------------------------------- EMDB metadata


def _value(node: Any) -> Any:
    """The plain value of an EMDB JSON node: ``{"valueOf_": 3.2, "units": "Å"}`` -> 3.2."""
    if isinstance(node, dict):
        for key in ("valueOf_", "value", "#text"):
            if key in node:
                return node[key]
        return None
    return node


def _float(node: Any) -> float | None:
    value = _value(node)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _get(data: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or len(data) <= key:
                return None
            data = data[key]
        else:
            if isinstance(data, list):  # generateDS lists where one item is usual
                data = data[0] if data else None
            if not isinstance(data, dict):
                return None
            data = data.get(key)
    return data


def _first(data: Any, paths: Iterable[tuple[str | int, ...]]) -> Any:
    for path in paths:
        found = _get(data, *path)
        if found is not None:
            return found
    return None


def _resolution(data: dict[str, Any]) -> float | None:
    determinations = _get(data, "structure_determination_list", "structure_determination")
    for det in determinations if isinstance(determinations, list) else [determinations]:
        processing = _get(det, "image_processing")
        for proc in processing if isinstance(processing, list) else [processing]:
            res = _float(_get(proc, "final_reconstruction", "resolution"))
            if res is not None:
                return res
    return _float(
        _first(data, [("resolution",), ("processing", "reconstruction", "resolution_by_author")])
    )


def _contour(map_node: Any) -> float | None:
    contours = _get(map_node, "contour_list", "contour")
    if isinstance(contours, dict):
        contours = [contours]
    if isinstance(contours, list) and contours:
        primary = [
            c
            for c in contours
            if isinstance(c, dict) and str(c.get("primary", "")).lower() in ("true", "1", "yes")
        ]
        for c in primary + [c for c in contours if isinstance(c, dict)]:
            level = _float(c.get("level"))
            if level is not None:
                return level
    return _float(_first(map_node, [("contour_level",), ("contourLevel",)]))


_AXES = {"X": 0, "Y": 1, "Z": 2, "COLUMN": 0, "ROW": 1, "SECTION": 2}


def parse_emdb_metadata(source: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """The facts the pipeline needs from an EMDB API entry record (tolerant to missing fields).

    Returns ``emdb_id`` (str|None), ``resolution`` (Å), ``contour`` (the recommended contour
    level: the primary one of ``map.contour_list``), ``shape_xyz`` ([nx, ny, nz] from
    ``map.dimensions`` col/row/sec permuted by ``map.axis_order``), ``voxels``, ``voxel_size``
    (Å, x, y, z from ``map.pixel_spacing``), ``title``; any of them ``None`` where the record
    lacks it. ``source`` is a path to the JSON or the parsed object.
    """
    data = source if isinstance(source, dict) else check_json(source)
    map_node = _get(data, "map") or {}
    dims_node = _get(map_node, "dimensions") or {}
    dims = [
        _float(_first(dims_node, [(k,) for k in names]))
        for names in (("col", "column", "x"), ("row", "y"), ("sec", "section", "z"))
    ]
    shape_xyz: list[int] | None = None
    if all(d is not None and d >= 1 for d in dims):
        crs = [int(d) for d in dims]  # type: ignore[arg-type]
        order = [
            str(_value(_get(map_node, "axis_order", k)) or "").upper()
            for k in ("fast", "medium", "slow")
        ]
        idx = [_AXES.get(a) for a in order]
        shape_xyz = list(crs)
        if sorted(i for i in idx if i is not None) == [0, 1, 2]:
            shape_xyz = [0, 0, 0]
            for k, axis in enumerate(idx):
                shape_xyz[axis] = crs[k]  # type: ignore[index]
    spacing = _get(map_node, "pixel_spacing") or {}
    voxel_size = [_float(_get(spacing, k)) for k in ("x", "y", "z")]
    emdb_id = _first(data, [("emdb_id",), ("admin", "emdb_id")])
    return {
        "emdb_id": str(emdb_id) if emdb_id is not None else None,
        "resolution": _resolution(data),
        "contour": _contour(map_node),
        "shape_xyz": shape_xyz,
        "voxels": int(np.prod(shape_xyz)) if shape_xyz else None,
        "voxel_size": voxel_size if all(v is not None for v in voxel_size) else None,
        "title": _value(_first(data, [("admin", "title"), ("title",)])),
    }
