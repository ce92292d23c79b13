"""Rule ``entry_info``: one entry's facts for the later rules, from the config and EMDB (or,
for a local map, from its header).

Resolution: the config's (or the search export's); contour: the config's where given, else
EMDB's recommended contour level (a local map has none: it is fitted whole); the map grid
(shape, voxel size, voxel count) from the EMDB metadata or the local map's header. Refuses
(before any map download) a map over ``dataset.max_voxels``.
"""

import json
import logging
from typing import Any

log = logging.getLogger("entry_info")  # the rule's name


def entry_info(entry: dict[str, Any], metadata_path: str, *, max_voxels: int) -> dict[str, Any]:
    from neural_em.pipeline.archive import parse_emdb_metadata

    meta = parse_emdb_metadata(metadata_path)
    info = dict(entry)
    info["emdb_resolution"] = meta.get("resolution")
    if info.get("resolution") is None:
        info["resolution"] = meta.get("resolution")
    if info.get("contour") is None:
        info["contour"] = meta.get("contour")
        info["contour_source"] = "EMDB recommended contour"
    else:
        info["contour_source"] = "config"
    if info["contour"] is None:
        raise ValueError(
            f"{metadata_path}: {entry['emdb_id']} has no recommended contour level; "
            "give one in the config's entries (contour:)"
        )
    shape = meta.get("shape_xyz") or meta.get("dimensions")
    info["shape_xyz"] = [int(n) for n in shape] if shape else None
    info["voxel_size"] = meta.get("voxel_size")
    info["voxels"] = (
        info["shape_xyz"][0] * info["shape_xyz"][1] * info["shape_xyz"][2]
        if info["shape_xyz"]
        else None
    )
    if info["voxels"] is not None and info["voxels"] > max_voxels:
        raise ValueError(
            f"{entry['emdb_id']}: {info['shape_xyz']} = {info['voxels']} voxels, more than "
            f"dataset.max_voxels = {max_voxels}. The study left such maps out: run the "
            "`voxel_counts` target first so the selection drops them (see config/paper.yaml)."
        )
    return info


def local_entry_info(entry: dict[str, Any], map_path: str, *, max_voxels: int) -> dict[str, Any]:
    """A local map's facts: the config's resolution and contour, the grid from its header."""
    from neural_em.mrcread import read_map_header

    header = read_map_header(map_path)
    info = dict(entry)
    info["emdb_resolution"] = None
    info["contour_source"] = (
        "config" if info.get("contour") is not None else "none: the whole box is fitted"
    )
    info["shape_xyz"] = [int(n) for n in header.shape_xyz]
    info["voxel_size"] = [float(v) for v in header.voxel_size]
    info["axis_order"] = list(header.axes)
    info["voxels"] = int(header.voxels)
    if info["voxels"] > max_voxels:
        raise ValueError(
            f"{entry['key']}: {info['shape_xyz']} = {info['voxels']} voxels, more than "
            f"dataset.max_voxels = {max_voxels}: crop the map, or raise dataset.max_voxels"
        )
    return info


def run(smk: Any) -> None:
    from neural_em.atomic import atomic_write_text

    entry = dict(smk.params.entry)
    if entry.get("source") == "local":
        info = local_entry_info(entry, smk.input.map, max_voxels=int(smk.params.max_voxels))
    else:
        info = entry_info(entry, smk.input.metadata, max_voxels=int(smk.params.max_voxels))
    log.info(
        "%s: resolution %s Å, contour %s (%s), grid %s",
        info["key"],
        info["resolution"],
        info["contour"],
        info["contour_source"],
        info["shape_xyz"],
    )
    atomic_write_text(smk.output[0], json.dumps(info, indent=2) + "\n")


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
