"""Variants of the ``fast`` preset, measured the way the design choices in docs/neural.md were.

``reconstruction``: fit EMD-3488 (contour 0.1) with the variant, resample at the original voxel
size, mean and max absolute error against the normalised input, fit seconds.
``interpolation``: 3I2N simulated at 3 Å, the variant's field against the 0.2 Å control on a
seeded subset of control points (MAE and max at the non-zero control voxels), with the cubic
spline beside it.

    python benchmarks/sweep_fast.py reconstruction --set softplus_beta=null --set max_epochs=150
    python benchmarks/sweep_fast.py reconstruction --seed 1
    python benchmarks/sweep_fast.py interpolation --set first_omega0=30 --set max_epochs=150

``--set KEY=VALUE`` overrides a field of the preset (VALUE as JSON: numbers, null, true).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _preset(overrides: list[str]):
    from neural_em.fields import presets

    changes = {}
    fields = {f.name for f in dataclasses.fields(presets.Preset)}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(
                f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}"
            )
        changes[key] = json.loads(value)
    return dataclasses.replace(presets.PRESETS["fast"], **changes), changes


def reconstruction(preset, seed: int) -> dict:
    import numpy as np

    from neural_em.fields.neural import NeuralDensityMap, fit_report
    from neural_em.voxelmap import load_normalised

    ref = load_normalised(DATA / "emd_3488" / "emd_3488.mrc", contour=0.1)
    t0 = time.perf_counter()
    field = NeuralDensityMap.from_voxel_data(ref, preset=preset, seed=seed)
    fit_s = time.perf_counter() - t0
    err = np.abs(field.to_voxel_density_map().data.astype(np.float64) - ref.data)
    return {
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "voxels_over_0.05": int((err > 0.05).sum()),
        "fit_s": round(fit_s, 1),
        "fit_report": fit_report(field),
    }


def interpolation(preset, seed: int, points: int) -> dict:
    from neural_em.pipeline.interpolation import interpolation_experiment

    r = interpolation_experiment(
        DATA / "simulated" / "3i2n" / "3i2n.pdb",
        resolution_A=3.0,
        methods=("neural", "spline"),
        fine_step_A=0.2,
        max_eval_points=points,
        seed=0,
        neural_kwargs={"preset": preset, "seed": seed},
    )
    out = {}
    for method, m in r["methods"].items():
        c = m["common"]["nonzero"]
        out[method] = {
            "mean_abs_error": c["mean_abs"],
            "max_abs_error": c["max_abs"],
            "build_s": round(m["build_s"], 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=["reconstruction", "interpolation"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the fast preset (JSON value)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--points", type=int, default=300_000, help="control points compared (interpolation)"
    )
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (the shared data folder beside the repository)")
        return 0
    preset, changes = _preset(args.set)
    result = {
        "task": args.task,
        "changes": changes,
        "seed": args.seed,
        "load_average_before": list(os.getloadavg()),
    }
    if args.task == "reconstruction":
        result.update(reconstruction(preset, args.seed))
    else:
        result.update(interpolation(preset, args.seed, args.points))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
