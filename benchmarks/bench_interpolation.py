"""Interpolation accuracy on a simulated map (issue 2, "What it must show" item 4).

3I2N simulated at 3 Å (Gaussian per C, N, O atom, sigma = 0.225 x resolution, 1 Å voxels) is
resampled to the control simulated directly at 0.2 Å on an aligned grid (every coarse voxel is
a control voxel) by trilinear, Fourier, cubic-spline and neural (``fast`` and ``paper``
presets) fields; errors at the control's non-zero voxels (the study's measure) and at all
control points, on the control's normalised scale.

Two passes: the classical methods at every control point (50 M points), then every method,
neural included, at the same seeded random subset of control points (neural fields are
expensive to evaluate on a 2-core CPU; the classical numbers of both passes show how well
the subset stands for the whole grid). The ``paper`` preset trains under a time budget
(``--paper-time-budget``, per region batch) so the benchmark ends in reasonable time on a CPU;
its numbers are therefore those of a budget-limited fit, not of the study's converged fits.

    python benchmarks/bench_interpolation.py --out benchmarks/out/interpolation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODEL = SHARED / "data" / "simulated" / "3i2n" / "3i2n.pdb"
PAPER_CSV = SHARED / "reference" / "paper_interpolation_evaluation.csv"


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}"


def table(result: dict, title: str) -> str:
    rows = [
        f"**{title}** (evaluated points: {result['evaluated_points']})",
        "",
        "| method | MAE non-zero | max abs non-zero | RMSE non-zero | mean (signed) non-zero "
        "| MAE all | max abs all | MAE dense (>= 0.2) | MAE non-zero, separate norm. "
        "| build s | evaluate s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in result["methods"].items():
        c, s = e["common"], e["separate"]
        rows.append(
            f"| {name} | {_fmt(c['nonzero']['mean_abs'])} | {_fmt(c['nonzero']['max_abs'])} "
            f"| {_fmt(c['nonzero']['rmse'])} | {_fmt(c['nonzero']['mean'], 2)} "
            f"| {_fmt(c['all']['mean_abs'])} | {_fmt(c['all']['max_abs'])} "
            f"| {_fmt(c['dense']['mean_abs'])} | {_fmt(s['nonzero']['mean_abs'])} "
            f"| {e['build_s']:.1f} | {e['evaluate_s']:.1f} |"
        )
    for name, why in result["skipped"].items():
        rows.append(f"| {name} | skipped: {why} |" + " |" * 9)
    return "\n".join(rows)


def paper_reference() -> dict | None:
    """Medians of the study's published interpolation errors (115 maps), where present."""
    if not PAPER_CSV.is_file():
        return None
    import csv
    import statistics

    with open(PAPER_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))

    def median(column: str) -> float:
        return float(statistics.median(float(r[column]) for r in rows))

    return {
        "maps": len(rows),
        "median_linear_mae": median("Linear MAE"),
        "median_neural_mae": median("Neural MAE"),
        "median_neural_max_error": median("Neural Max. Error"),
        "note": "the study's trilinear grid was misaligned (origin from x for all axes)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="PDB/mmCIF model")
    p.add_argument("--resolution", type=float, default=3.0, help="simulation resolution, Å")
    p.add_argument("--fine-step", type=float, default=0.2, help="control grid spacing, Å")
    p.add_argument(
        "--subset-points",
        type=int,
        default=1_000_000,
        help="control points (seeded random subset) for the pass with neural fields",
    )
    p.add_argument(
        "--paper-time-budget",
        type=float,
        default=120.0,
        help="time budget (s) of the paper preset's training, per region batch",
    )
    p.add_argument(
        "--paper-max-epochs",
        type=int,
        default=None,
        help="epoch cap of the paper preset (default: the preset's)",
    )
    p.add_argument(
        "--fast-time-budget",
        type=float,
        default=None,
        help="time budget (s) of the fast preset (default: the preset's)",
    )
    p.add_argument("--no-neural", action="store_true", help="classical methods only")
    p.add_argument(
        "--skip-full", action="store_true", help="skip the all-points pass of the classical methods"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if not args.model.is_file():
        print(f"skipped: model {args.model} is absent (../shared/data not beside the repo)")
        return 0
    from neural_em.pipeline.interpolation import CLASSICAL_METHODS, interpolation_experiment

    started = time.time()
    out: dict = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
        "model": str(args.model),
        "resolution_A": args.resolution,
        "fine_step_A": args.fine_step,
        "paper_reference": paper_reference(),
    }
    text = []
    if not args.skip_full:
        full = interpolation_experiment(
            args.model,
            resolution_A=args.resolution,
            methods=CLASSICAL_METHODS,
            fine_step_A=args.fine_step,
        )
        out["all_points"] = full
        text.append(table(full, "Classical methods, every control point"))
    methods = list(CLASSICAL_METHODS) + ([] if args.no_neural else ["neural-fast", "neural-paper"])
    results: dict = {}
    skipped: dict = {}
    subset = None
    for method in methods:
        kwargs: dict = {"seed": args.seed}
        if method == "neural-paper":
            kwargs.update(time_budget_s=args.paper_time_budget)
            if args.paper_max_epochs is not None:
                kwargs["max_epochs"] = args.paper_max_epochs
        elif method == "neural-fast" and args.fast_time_budget is not None:
            kwargs["time_budget_s"] = args.fast_time_budget
        r = interpolation_experiment(
            args.model,
            resolution_A=args.resolution,
            methods=(method,),
            fine_step_A=args.fine_step,
            max_eval_points=args.subset_points,
            seed=args.seed,
            neural_kwargs=kwargs if method.startswith("neural") else None,
        )
        results.update(r["methods"])
        skipped.update(r["skipped"])
        if method in r["methods"]:
            r["methods"][method]["neural_kwargs"] = kwargs if method.startswith("neural") else None
        subset = r
    assert subset is not None
    subset = {**subset, "methods": results, "skipped": skipped}
    out["subset"] = subset
    text.append(table(subset, "Every method, the same random subset of control points"))
    out["wall_s"] = time.time() - started
    print("\n\n".join(text))
    if out["paper_reference"]:
        ref = out["paper_reference"]
        print(
            f"\nStudy (115 maps, medians): neural MAE {ref['median_neural_mae']:.4g}, "
            f"misaligned trilinear MAE {ref['median_linear_mae']:.4g}"
        )
    if args.out:
        from neural_em.atomic import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
