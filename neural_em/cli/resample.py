"""``neural-em resample``: write a field as an MRC map at any voxel size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neural_em.cli.common import add_command, positive_float
from neural_em.fields import load_field


def register(sub: Any) -> None:
    p = add_command(sub, "resample", "Resample a .neural field to an MRC map.",
                    "neural-em resample emd_3488.neural -o emd_3488_0.5A.mrc --voxel-size 0.5")
    p.add_argument("field", type=Path, help=".neural file (neural or spline field)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .mrc")
    p.add_argument("--voxel-size", type=positive_float, nargs="+", default=None,
                   help="voxel size in Å (one value, or three for x y z); default: the "
                   "field's own")
    p.add_argument("--force", action="store_true", help="overwrite the output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    field = load_field(args.field)
    vs = args.voxel_size
    if vs is not None and len(vs) not in (1, 3):
        raise argparse.ArgumentTypeError("--voxel-size takes one or three values")
    field.save_as_voxel_map(args.output, None if vs is None else vs, overwrite=args.force)
    print(f"wrote {args.output}")
    return 0
