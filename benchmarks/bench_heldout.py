"""Held-out-voxel interpolation benchmark on real maps.

For each map of ../shared/data (normalised by the study's rule), the sub-grid of even voxels
``data[::2, ::2, ::2]`` (voxel size doubled) predicts every other voxel; errors
``predicted - truth`` at the held-out voxels: all of them, the non-zero ones, and the dense
ones (normalised truth >= 0.2, inside the molecule). Methods: trilinear, Fourier, cubic spline,
and the neural ``fast`` preset where the neural module is available (``--no-neural`` skips it).

    python benchmarks/bench_heldout.py --out benchmarks/out/heldout.json
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
DATA = REPO.parent / "shared" / "data"
MAPS = (
    "emd_3488/emd_3488.mrc",
    "emd_6272/emd_6272_zone.mrc",
    "emd_5778/emd_5778_chainA.mrc",
    "emd_21457/emd_21457_seg.mrc",
)


def _fmt(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--maps",
        nargs="+",
        default=list(MAPS),
        help="maps relative to ../shared/data (or absolute paths)",
    )
    p.add_argument(
        "--density-threshold",
        type=float,
        default=0.2,
        help="normalised density from which a held-out voxel counts as dense",
    )
    p.add_argument("--no-neural", action="store_true", help="classical methods only")
    p.add_argument(
        "--neural-time-budget",
        type=float,
        default=None,
        help="time budget (s) of the fast preset (default: the preset's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from neural_em.pipeline.interpolation import (
        CLASSICAL_METHODS,
        heldout_experiment,
        neural_available,
    )
    from neural_em.voxelmap import read_map

    methods = list(CLASSICAL_METHODS)
    notes = []
    if not args.no_neural:
        ok, why = neural_available()
        if ok:
            methods.append("neural-fast")
        else:
            notes.append(f"neural-fast skipped: {why}")
    neural_kwargs = {"seed": args.seed}
    if args.neural_time_budget is not None:
        neural_kwargs["time_budget_s"] = args.neural_time_budget

    started = time.time()
    results = {}
    rows = [
        "| map | method | MAE all | MAE non-zero | MAE dense | RMSE dense | max abs "
        "| build s | evaluate s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rel in args.maps:
        path = Path(rel) if Path(rel).is_absolute() else DATA / rel
        if not path.is_file():
            msg = f"skipped {rel}: {path} is absent (../shared/data not beside the repo)"
            print(msg)
            notes.append(msg)
            continue
        r = heldout_experiment(
            read_map(path),
            methods=methods,
            neural_kwargs=neural_kwargs,
            density_threshold=args.density_threshold,
            seed=args.seed,
        )
        results[rel] = r
        for name, e in r["methods"].items():
            rows.append(
                f"| {r['map_id']} | {name} | {_fmt(e['all']['mean_abs'])} "
                f"| {_fmt(e['nonzero']['mean_abs'])} | {_fmt(e['dense']['mean_abs'])} "
                f"| {_fmt(e['dense']['rmse'])} | {_fmt(e['all']['max_abs'])} "
                f"| {e['build_s']:.1f} | {e['evaluate_s']:.1f} |"
            )
        for name, why in r["skipped"].items():
            rows.append(f"| {r['map_id']} | {name} | skipped: {why} |" + " |" * 6)
    if not results:
        print("no map found: nothing to benchmark")
        return 0
    print("\n".join(rows))
    for note in notes:
        print(f"\nnote: {note}")
    if args.out:
        from neural_em.atomic import atomic_write_text

        out = {
            "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
            "methods": methods,
            "density_threshold": args.density_threshold,
            "notes": notes,
            "wall_s": time.time() - started,
            "maps": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=2, allow_nan=False) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
