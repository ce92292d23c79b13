"""``neural-em info``: describe a map or a ``.neural`` field file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from neural_em.cli.common import add_command, add_max_voxels, print_json
from neural_em.fields import load_field
from neural_em.fields.fileformat import read_field_file, sniff_format
from neural_em.voxelmap import mean_std, read_map


def register(sub: Any) -> None:
    """Add ``neural-em info`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "info",
        "Describe a voxel map or a .neural field file.",
        "neural-em info emd_3488.mrc --json",
    )
    p.add_argument("file", type=Path, help="MRC/MAP/CCP4 map (optionally .gz) or .neural file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_max_voxels(p)
    p.set_defaults(func=run)


def describe(path: Path, max_voxels: int | None = None) -> dict[str, Any]:
    """A JSON-able description of a map or field file."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    is_field = path.suffix == ".neural" or (
        len(head) > 8 and head[8:9] == b"{" and sniff_format(head) is None
    )
    if is_field:
        header, tensors = read_field_file(path)
        load_field(path)  # a file that cannot be used as a field is reported, not described
        info = {
            "file": str(path),
            "type": "field",
            "kind": header.get("kind"),
            "map_id": header.get("map_id"),
            "shape_xyz": header.get("shape_xyz"),
            "voxel_size": header.get("voxel_size"),
            "origin": header.get("origin"),
            "axis_order": [1, 2, 3],
            "preset": header.get("preset"),
            "regions": len(header.get("regions", [])) if header.get("kind") == "neural" else 0,
            "parameters": int(sum(int(np.prod(t.shape)) for t in tensors.values())),
            "bytes": path.stat().st_size,
            "float16": header.get("float16", False),
            "normalisation": header.get("normalisation"),
        }
        for key in ("network", "training"):
            if key in header:
                info[key] = header[key]
        return info
    vmap = read_map(path, max_voxels=max_voxels)
    data = vmap.data
    mean, std = mean_std(data)
    return {
        "file": str(path),
        "type": "map",
        "map_id": vmap.map_id,
        "shape_xyz": list(vmap.shape_xyz),
        "voxel_size": vmap.voxel_size.tolist(),
        "origin": vmap.origin.tolist(),
        "axis_order": list(vmap.axis_order),
        "bytes": path.stat().st_size,
        "min": float(data.min()),
        "max": float(data.max()),
        "mean": mean,
        "std": std,
    }


def run(args: argparse.Namespace) -> int:
    """Print what a map or ``.neural`` file holds (a table, or JSON with ``--json``)."""
    info = describe(args.file, args.max_voxels)
    if args.json:
        print_json(info)
        return 0
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, list) and value and isinstance(value[0], float):
            value = ", ".join(f"{v:.4f}" for v in value)
        print(f"{key:>14}: {value}")
    return 0
