"""Every field side by side on two tasks the learned field must also serve (issue 14):

1. the study's resampling experiment on simulated maps: a model simulated at the resolution
   (coarse map, voxel = resolution / 3) and directly at 0.2 Å (the control); each field built
   from the coarse map is compared with the control at a seeded random subset of its voxels
   (mean and max absolute error at the control's non-zero voxels, normalised density);
2. the backbone graph (``--method backbone``) built on each field of each real map with a
   model, against that model.

Fields: trilinear (resampling only: its Hessian is zero almost everywhere), Fourier, cubic
spline, learned, and the fast neural field where ``--neural-file`` names a fitted ``.neural``
file of EMD-3488 (``benchmarks/out/emd_3488_fast.neural``, written by
``bench_graph.py --neural``).

    python benchmarks/bench_fields.py
    python benchmarks/bench_fields.py --skip resampling
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SIMULATED = ("3i2n", "3qc7", "6g61")
#: The fold network trained without each simulated map and its model (bench_learned.py's
#: folds, written by ``python tools/learned_train.py ... --exclude``): the packaged
#: network saw every shared map, these three included.
FOLD_OF = {"3i2n": "fold_a", "3qc7": "fold_b", "6g61": "fold_c"}
GRAPH_MAPS = [
    ("emd_3488", "emd_3488/emd_3488.mrc", "emd_3488/5ni1.cif", 3.2),
    ("emd_6272", "emd_6272/emd_6272_zone.mrc", "emd_6272/3j9s.pdb", 2.6),
    ("emd_5778", "emd_5778/emd_5778_chainA.mrc", "emd_5778/3j5p.pdb", 3.28),
    ("emd_21457", "emd_21457/emd_21457_seg.mrc", "emd_21457/6vyb_Ndom.pdb", 3.2),
]
GRAPH_FIELDS = ("spline", "fourier", "learned")


def resampling(data: Path, points: int, folds_dir: Path) -> list[dict[str, Any]]:
    from neural_em.pipeline.interpolation import interpolation_experiment

    rows = []
    for name in SIMULATED:
        model = data / "simulated" / name / f"{name}.pdb"
        if not model.is_file():
            print(f"skipping {name}: {model} absent", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        r = interpolation_experiment(
            model,
            resolution_A=3.0,
            methods=("trilinear", "fourier", "spline", "learned"),
            max_eval_points=points,
        )
        runs = [("", r)]
        fold = folds_dir / f"{FOLD_OF[name]}.safetensors"
        if fold.is_file():
            unseen = interpolation_experiment(
                model,
                resolution_A=3.0,
                methods=("learned",),
                learned_kwargs={"weights": fold},
                max_eval_points=points,
            )
            runs.append((f" ({FOLD_OF[name]}: never saw {name})", unseen))
        else:
            print(f"no fold network {fold}: the learned field here saw {name}", file=sys.stderr)
        for suffix, result in runs:
            for method, rec in result["methods"].items():
                stats = rec["common"]["nonzero"]
                rows.append(
                    {
                        "map": name,
                        "method": method
                        + (suffix or (" (packaged)" if method == "learned" else "")),
                        "mae": stats["mean_abs"],
                        "max_abs": stats["max_abs"],
                        "build_s": rec["build_s"],
                    }
                )
        print(f"{name}: resampling in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def graphs(data: Path, neural_file: Path | None) -> list[dict[str, Any]]:
    from neural_em.fields import load_field
    from neural_em.fields.classical import FourierDensityMap
    from neural_em.fields.learned import LearnedDensityMap
    from neural_em.fields.spline import SplineDensityMap
    from neural_em.graph.evaluate import evaluate_graph
    from neural_em.graph.methods import build_graph

    kinds = {
        "spline": SplineDensityMap,
        "fourier": FourierDensityMap,
        "learned": LearnedDensityMap,
    }
    rows = []
    for name, map_rel, model_rel, res in GRAPH_MAPS:
        map_path, model_path = data / map_rel, data / model_rel
        if not map_path.is_file() or not model_path.is_file():
            print(f"skipping {name}: files absent", file=sys.stderr)
            continue
        fields = [(k, lambda k=k, p=map_path: kinds[k].from_voxel_map(p)) for k in GRAPH_FIELDS]
        if name == "emd_3488" and neural_file is not None and neural_file.is_file():
            fields.append(("neural (fast)", lambda: load_field(neural_file)))
        for kind, make in fields:
            t0 = time.perf_counter()
            field = make()
            field_s = time.perf_counter() - t0
            graph = build_graph(field, method="backbone", resolution_A=res)
            r = evaluate_graph(graph, model_path)
            rows.append(
                {
                    "map": name,
                    "field": kind,
                    "field_s": field_s,
                    "graph_s": graph.timings["total"],
                    **{
                        k: r[k]
                        for k in (
                            "nodes_per_ca",
                            "recall",
                            "one_to_one_precision",
                            "f1",
                            "chain_recall",
                            "edge_precision",
                        )
                    },
                }
            )
            print(f"{name} {kind}: recall {r['recall']:.3f}", file=sys.stderr, flush=True)
    return rows


def _f(v: Any, d: int = 3) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--points", type=int, default=1_000_000, help="control voxels compared")
    p.add_argument(
        "--neural-file", type=Path, default=REPO / "benchmarks" / "out" / "emd_3488_fast.neural"
    )
    p.add_argument("--folds-dir", type=Path, default=REPO / "benchmarks" / "out" / "learned")
    p.add_argument("--skip", nargs="*", default=[], choices=("resampling", "graphs"))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "fields.json")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    if "resampling" not in args.skip:
        result["resampling"] = resampling(args.data, args.points, args.folds_dir)
        print("\n### Resampling: simulated at 3 Å, compared with the 0.2 Å control\n")
        print("| map | method | mean abs error | max abs error | build s |")
        print("|---|---|---|---|---|")
        for r in result["resampling"]:
            print(
                f"| {r['map']} | {r['method']} | {_f(r['mae'], 4)} | {_f(r['max_abs'], 3)} | "
                f"{r['build_s']:.1f} |"
            )
    if "graphs" not in args.skip:
        result["graphs"] = graphs(args.data, args.neural_file)
        print("\n### Backbone graph on each field\n")
        print(
            "| map | field | nodes/CA | recall | 1:1 precision | F1 | chain recall | "
            "edge precision | field s | graph s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in result["graphs"]:
            print(
                f"| {r['map']} | {r['field']} | {_f(r['nodes_per_ca'], 2)} | {_f(r['recall'])} | "
                f"{_f(r['one_to_one_precision'])} | {_f(r['f1'])} | {_f(r['chain_recall'])} | "
                f"{_f(r['edge_precision'])} | {r['field_s']:.1f} | {r['graph_s']:.1f} |"
            )
    result["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
