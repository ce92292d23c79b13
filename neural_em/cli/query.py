"""``neural-em query``: density and gradient of a field at points from a CSV file."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from neural_em.atomic import atomic_path
from neural_em.cli.common import add_command
from neural_em.errors import InputError
from neural_em.fields import load_field


def register(sub: Any) -> None:
    """Add ``neural-em query`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "query",
        "Density and gradient (per Å) of a field at x,y,z points.",
        "neural-em query emd_3488.neural points.csv -o values.csv",
    )
    p.add_argument("field", type=Path, help=".neural file")
    p.add_argument(
        "points", type=Path, help="CSV with columns x,y,z in Å (a header line is optional)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="CSV with x,y,z,density,grad_x,grad_y,grad_z (NaN outside the box)",
    )
    p.add_argument("--force", action="store_true", help="overwrite the output")
    p.set_defaults(func=run)


def read_points_csv(path: Path) -> np.ndarray:
    """Points ``(n, 3)`` from a CSV of x,y,z (optional header)."""
    if not path.is_file():
        raise InputError("no such file", path)
    rows = []
    with open(path, newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and [c.strip().lower() for c in row[:3]] == ["x", "y", "z"]:
                continue
            if len(row) < 3:
                raise InputError(f"line {lineno}: expected x,y,z, got {len(row)} columns", path)
            try:
                rows.append([float(c) for c in row[:3]])
            except ValueError as exc:
                raise InputError(f"line {lineno}: not numbers: {row[:3]}", path) from exc
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def run(args: argparse.Namespace) -> int:
    """Write the density and gradient of a field at the points of a CSV file."""
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output}: exists (pass --force to replace it)")
    field = load_field(args.field)
    points = read_points_csv(args.points)
    values = field.get_values(points)
    # Stream the rows into the temporary file (no whole-table string in memory).
    with atomic_path(args.output, overwrite=args.force) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["x", "y", "z", "density", "grad_x", "grad_y", "grad_z"])
            for p, v in zip(points, values, strict=True):
                writer.writerow([f"{c:.6g}" for c in p] + [f"{c:.8g}" for c in v])
    print(f"wrote {len(points)} rows to {args.output}")
    return 0
