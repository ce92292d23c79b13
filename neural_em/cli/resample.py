"""``neural-em resample``: write a field as an MRC map at any voxel size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neural_em.cli.common import add_command, add_max_voxels, positive_float
from neural_em.errors import InputError
from neural_em.fields import load_field


def register(sub: Any) -> None:
    """Add ``neural-em resample`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "resample",
        "Resample a .neural field to an MRC map.",
        "neural-em resample emd_3488.neural -o emd_3488_0.5A.mrc --voxel-size 0.5",
    )
    p.add_argument("field", type=Path, help=".neural file (neural or spline field)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .mrc")
    p.add_argument(
        "--voxel-size",
        type=positive_float,
        nargs="+",
        default=None,
        help="voxel size in Å (one value, or three for x y z); default: the field's own",
    )
    p.add_argument("--force", action="store_true", help="overwrite the output")
    add_max_voxels(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write a field as an MRC map on a grid of the asked voxel size."""
    vs = args.voxel_size
    if vs is not None and len(vs) not in (1, 3):
        raise InputError(f"--voxel-size takes one or three values, got {len(vs)}")
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output}: exists (pass --force to replace it)")
    field = load_field(args.field)
    field.max_voxels = args.max_voxels
    field.save_as_voxel_map(args.output, None if vs is None else vs, overwrite=args.force)
    print(f"wrote {args.output}")
    return 0
