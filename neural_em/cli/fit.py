"""``neural-em fit``: fit a continuous field of any kind (:data:`neural_em.fields.FIELD_KINDS`)
to a voxel map."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from neural_em.cli.common import (
    add_command,
    add_max_voxels,
    non_negative_float,
    positive_float,
    positive_int,
)
from neural_em.fields.kinds import FIELD_HELP, FIELD_KINDS


def register(sub: Any) -> None:
    """Add ``neural-em fit`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "fit",
        "Fit a field of any kind to a map: the neural field (a SIREN per region, trained) "
        "or a field without training (spline, trilinear, fourier, learned).",
        "neural-em fit emd_3488.mrc --contour 0.7 -o emd_3488.neural --preset fast",
    )
    p.add_argument("map", type=Path, help="MRC/MAP/CCP4 map (optionally .gz/.bz2)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .neural file")
    p.add_argument(
        "--field",
        choices=tuple(FIELD_KINDS),
        default="neural",
        help=f"field kind: {FIELD_HELP}",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="learned field: network weights (.safetensors with its .json "
        "beside it); default: the weights packaged with neural-em",
    )
    p.add_argument(
        "--preset",
        choices=("fast", "paper"),
        default="fast",
        help="neural training preset: fast (batched, this project's) or paper "
        "(the study's protocol)",
    )
    p.add_argument(
        "--contour",
        type=float,
        default=None,
        help="crop to the box of voxels >= this raw density level plus 5 Å",
    )
    p.add_argument("--margin", type=non_negative_float, default=5.0, help="crop margin in Å")
    p.add_argument(
        "--device",
        nargs="+",
        default=["cpu"],
        help="cpu, cuda, cuda:N; several GPUs split the regions",
    )
    p.add_argument(
        "--max-epochs",
        type=positive_int,
        default=None,
        help="epoch cap per region (default: the preset's)",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help="training time budget in seconds per region batch (default: the preset's)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (CPU fits are repeatable)")
    p.add_argument("--float16", action="store_true", help="store weights as float16")
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="ignore a checkpoint left by an interrupted fit of the same output",
    )
    p.add_argument("--force", action="store_true", help="overwrite the output")
    add_max_voxels(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit the field and write its ``.neural`` file."""
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output}: exists (pass --force to replace it)")
    start = time.perf_counter()
    if args.field != "neural":
        from neural_em.fields.kinds import fit_field

        options = {"weights": args.weights} if args.field == "learned" else {}
        field = fit_field(
            args.map,
            args.field,
            contour=args.contour,
            max_voxels=args.max_voxels,
            margin_A=args.margin,
            **options,
        )
        field.save(args.output, overwrite=args.force, float16=args.float16)
        refined = getattr(field, "refined", None)
        grid = f" refined to {refined.shape_xyz}" if refined is not None else ""
        print(
            f"wrote {args.output} ({args.field} field, {field.shape_xyz} voxels{grid}, "
            f"{time.perf_counter() - start:.1f} s)"
        )
        return 0
    from neural_em.fields.neural import NeuralDensityMap, fit_report

    field = NeuralDensityMap.from_voxel_map(
        args.map,
        contour=args.contour,
        margin_A=args.margin,
        devices=args.device,
        preset=args.preset,
        max_epochs=args.max_epochs,
        time_budget_s=args.time_budget,
        seed=args.seed,
        checkpoint=None if args.no_resume else _checkpoint_path(args.output),
        progress=not args.quiet,
        max_voxels=args.max_voxels,
    )
    field.save(args.output, overwrite=args.force, float16=args.float16)
    ckpt = _checkpoint_path(args.output)
    if ckpt.exists():
        ckpt.unlink()
    print(fit_report(field))
    print(f"wrote {args.output} ({time.perf_counter() - start:.1f} s)")
    return 0


def _checkpoint_path(output: Path) -> Path:
    """Where an interrupted fit of ``output`` keeps its finished regions."""
    return output.with_name(f".{output.name}.checkpoint")
