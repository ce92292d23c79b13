"""The configuration's entry list (``dataset: {source: entries}``), checked when the workflow is
parsed, before any job runs.

An entry is either an **EMDB entry** (``emdb_id``, ``pdb_id``, ``resolution``; the map, the model
and their metadata are downloaded) or a **local entry** that names files on disk::

    - name: my-map              # file names and tables: letters, digits, '-', '_'
      map: maps/my_map.mrc      # MRC/MAP/CCP4, optionally .gz/.bz2
      model: maps/my_model.cif  # optional: PDB or mmCIF; without it, no model metrics
      resolution: 3.4           # Å, > 0
      contour: 0.02             # optional raw density level of the crop

Relative paths are taken from the working directory. Every entry gets a ``key`` (an EMDB entry
``emd_N``, a local entry its ``name``) that names its files under ``results/`` and its rows in
the tables. :func:`config_entries` refuses, with a message naming the entry: a map or model file
that does not exist or cannot be read (the map's header is read with the bounded reader of
:func:`neural_em.mrcread.read_map_header`, the model with :func:`neural_em.models.read_model`),
an entry with both ``emdb_id`` and ``map`` (or neither), two entries with the same key, a name
that is not a safe file name, a resolution that is not a positive number.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.errors import InputError
from neural_em.mrcread import MapHeader

#: A local entry's name: used in file names under results/ and in the tables.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
#: Keys an EMDB entry and a local entry may have (the schema lists the union).
EMDB_KEYS = {"emdb_id", "pdb_id", "resolution", "contour", "title", "citation"}
LOCAL_KEYS = {"name", "map", "model", "resolution", "contour", "title", "citation"}


class EntryError(InputError):
    """A configured entry that cannot be used; the message names the entry."""


def _label(index: int, item: Mapping[str, Any]) -> str:
    """How an entry is named in messages: its position and its name or EMDB id."""
    name = item.get("name") if item.get("name") is not None else item.get("emdb_id")
    return f"config entries[{index}]" + (f" ({name!r})" if name is not None else "")


def _resolution(label: str, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise EntryError(f"{label}: resolution must be a positive number of Å, got {value!r}")
    try:
        res = float(value)
    except (TypeError, ValueError):
        res = math.nan
    if not math.isfinite(res) or res <= 0:
        raise EntryError(f"{label}: resolution must be a positive number of Å, got {value!r}")
    return res


def _contour(label: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        level = float(value)
    except (TypeError, ValueError):
        level = math.nan
    if isinstance(value, bool) or not math.isfinite(level):
        raise EntryError(f"{label}: contour must be a number (a raw density level), got {value!r}")
    return level


def _local_file(label: str, what: str, value: Any, base_dir: Path) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise EntryError(f"{label}: {what} must be a file path, got {value!r}")
    path = Path(os.path.expanduser(str(value)))
    full = path if path.is_absolute() else base_dir / path
    if not full.exists():
        raise EntryError(
            f"{label}: {what} file {value} does not exist (relative paths are "
            f"taken from the working directory, {base_dir})"
        )
    if not full.is_file():
        raise EntryError(f"{label}: {what} {value} is not a file")
    if not os.access(full, os.R_OK):
        raise EntryError(f"{label}: {what} file {value} cannot be read (permission denied)")
    return full.resolve()


def check_map_file(label: str, path: Path) -> MapHeader:
    """The map's checked header (shape, voxel size, axis order) or an :class:`EntryError`."""
    from neural_em.mrcread import read_map_header

    try:
        return read_map_header(path)
    except InputError as exc:
        raise EntryError(f"{label}: map file is not a readable MRC/MAP/CCP4 map: {exc}") from exc


def check_model_file(label: str, path: Path) -> int:
    """The model's C-alpha count or an :class:`EntryError`."""
    from neural_em.models import read_model

    try:
        return read_model(path).n_ca
    except InputError as exc:
        raise EntryError(f"{label}: model file is not a readable PDB/mmCIF model: {exc}") from exc


def _emdb_entry(label: str, item: Mapping[str, Any]) -> dict[str, Any]:
    extra = sorted(set(item) - EMDB_KEYS)
    if extra:
        raise EntryError(
            f"{label}: an EMDB entry takes no {', '.join(extra)} (a local map is "
            "named by name, map and model instead of emdb_id and pdb_id)"
        )
    emdb_id = str(item["emdb_id"])
    if not re.fullmatch(r"EMD-[0-9]{4,6}", emdb_id):
        raise EntryError(f"{label}: emdb_id must look like EMD-1234, got {emdb_id!r}")
    pdb_id = item.get("pdb_id")
    if not isinstance(pdb_id, str) or not re.fullmatch(r"[0-9][A-Za-z0-9]{3}", pdb_id):
        raise EntryError(
            f"{label}: an EMDB entry needs pdb_id, the fitted model's PDB id "
            f"(such as 5ni1), got {pdb_id!r}"
        )
    return {
        "key": f"emd_{emdb_id.split('-', 1)[1]}",
        "source": "emdb",
        "emdb_id": emdb_id,
        "pdb_id": pdb_id.lower(),
        "resolution": _resolution(label, item.get("resolution")),
        "contour": _contour(label, item.get("contour")),
        "title": str(item.get("title", "") or ""),
        "citation": str(item.get("citation", "") or ""),
    }


def _local_entry(
    label: str, item: Mapping[str, Any], base_dir: Path, check_files: bool
) -> dict[str, Any]:
    extra = sorted(set(item) - LOCAL_KEYS)
    if extra:
        raise EntryError(
            f"{label}: a local entry takes no {', '.join(extra)} (its model is "
            "a file named by model:)"
        )
    name = item.get("name")
    if name is None:
        raise EntryError(
            f"{label}: a local map needs a name (letters, digits, '-', '_'): it "
            "names the entry's files and table rows"
        )
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise EntryError(
            f"{label}: name {name!r} is not a safe file name: use letters, digits, '-' and '_' only"
        )
    resolution = _resolution(label, item.get("resolution"))
    contour = _contour(label, item.get("contour"))
    map_path = _local_file(label, "map", item.get("map"), base_dir)
    model = item.get("model")
    model_path = _local_file(label, "model", model, base_dir) if model is not None else None
    header: dict[str, Any] = {}
    if check_files:
        header = check_map_file(label, map_path)
        if model_path is not None:
            check_model_file(label, model_path)
    return {
        "key": name,
        "source": "local",
        "name": name,
        "emdb_id": None,
        "pdb_id": None,
        "map": str(map_path),
        "model": None if model_path is None else str(model_path),
        "resolution": resolution,
        "contour": contour,
        "title": str(item.get("title", "") or ""),
        "citation": str(item.get("citation", "") or ""),
        "shape_xyz": [int(n) for n in header.shape_xyz],
        "voxel_size": [float(v) for v in header.voxel_size],
        "axis_order": list(header.axes),
    }


def config_entries(
    items: Sequence[Mapping[str, Any]] | None,
    *,
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
) -> dict[str, dict[str, Any]]:
    """Key -> entry record of the configuration's ``entries`` list, every entry checked.

    ``base_dir``: where relative paths start (default: the working directory, which is
    Snakemake's ``--directory``). ``check_files``: read the map headers and the models (the
    workflow does; only existence is checked without it). Raises :class:`EntryError` naming the
    entry.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not items:
        raise EntryError("config: dataset.source is 'entries' but the entries list is empty")
    entries: dict[str, dict[str, Any]] = {}
    where: dict[str, int] = {}
    for index, item in enumerate(items):
        label = _label(index, item) if isinstance(item, Mapping) else f"config entries[{index}]"
        if not isinstance(item, Mapping):
            raise EntryError(
                f"{label}: an entry is a mapping (emdb_id: ... or name: ..., "
                f"map: ...), got {item!r}"
            )
        has_emdb, has_map = item.get("emdb_id") is not None, item.get("map") is not None
        if has_emdb and has_map:
            raise EntryError(
                f"{label}: gives both emdb_id and map; an entry is either an EMDB "
                "entry (emdb_id, pdb_id) or a local map (name, map, model)"
            )
        if not has_emdb and not has_map:
            raise EntryError(f"{label}: needs emdb_id (an EMDB entry) or map (a local map file)")
        entry = (
            _emdb_entry(label, item) if has_emdb else _local_entry(label, item, base, check_files)
        )
        key = entry["key"]
        if key in entries:
            first = where[key]
            raise EntryError(
                f"{label}: the name {key!r} is taken twice (config entries[{first}] "
                f"and entries[{index}]); every entry needs its own name"
            )
        entries[key] = entry
        where[key] = index
    return entries
