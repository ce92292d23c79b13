"""Learned field against the classical interpolators on maps it never saw (held-out folds).

Decimation test on every map of ../shared/data with an isotropic voxel size: the even voxels
``data[::2, ::2, ::2]`` of the normalised map (cropped to an odd size) are kept, every other
voxel is predicted; MAE (and RMSE, max) where the truth > 0.1, at least ``--edge`` voxels from
the box edge, on one seeded subset of at most ``--max-points`` voxels shared by all methods.
Methods: learned, Fourier, cubic spline, trilinear (and the fast neural field with
``--neural``, minutes per map on a CPU).

Leave-one-map-out, in folds: the learned field of a map is the network of the fold that
excluded it (the map, and the models of its structure, were never in that network's training:
the benchmark checks each network's data record and refuses otherwise). Folds (three networks
rather than one per map, to fit the CPU budget):

* fold a: emd_3488, emd_21457, sim_3i2n
* fold b: emd_6272, emd_3197, sim_3qc7
* fold c: emd_5778, emd_11007, sim_6g61

Train them (``--train-minutes M`` trains missing ones here, one thread each, in sequence)::

    python tools/learned_train.py --data-dir ../shared/data \\
        --out benchmarks/out/learned/fold_a.safetensors --minutes 14 \\
        --exclude emd_3488 --exclude emd_21457 --exclude sim_3i2n

then::

    python benchmarks/bench_learned.py --folds-dir benchmarks/out/learned \\
        --out benchmarks/out/learned_heldout.json --figure docs/figures/learned_heldout.png

Also times the learned field on the 100^3 map EMD-3488 (``--time-threads`` torch threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FOLDS = {
    "a": ("emd_3488", "emd_21457", "sim_3i2n"),
    "b": ("emd_6272", "emd_3197", "sim_3qc7"),
    "c": ("emd_5778", "emd_11007", "sim_6g61"),
}
SIMULATED = {"sim_3i2n", "sim_3qc7", "sim_6g61"}


def decimation_test(
    vmap, fields: dict, *, edge: int, threshold: float, max_points: int, seed: int
) -> dict:
    """MAE etc. of each field builder (name -> callable(coarse) -> field) at held-out voxels."""
    if vmap.normalisation is None:
        vmap = vmap.normalised()
    odd = [n if n % 2 else n - 1 for n in vmap.shape_xyz]
    full = vmap.subbox((0, 0, 0), odd)
    coarse = dataclasses.replace(
        full, data=full.data[::2, ::2, ::2].copy(), voxel_size=full.voxel_size * 2.0
    )
    truth = full.data
    mask = np.zeros(truth.shape, bool)
    mask[edge:-edge, edge:-edge, edge:-edge] = True
    mask &= truth > threshold
    mask[::2, ::2, ::2] = False
    idx = np.flatnonzero(mask.ravel())
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    zyx = np.stack(np.unravel_index(idx, truth.shape), axis=1)
    pts = full.origin + zyx[:, ::-1] * full.voxel_size
    t = truth.ravel()[idx].astype(np.float64)
    out = {
        "n_points": int(len(idx)),
        "shape_xyz": list(full.shape_xyz),
        "voxel_size": full.voxel_size.tolist(),
        "methods": {},
    }
    for name, build in fields.items():
        t0 = time.perf_counter()
        fld = build(coarse)
        t1 = time.perf_counter()
        pred = fld.get_densities(pts).astype(np.float64)
        err = pred - t
        out["methods"][name] = {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "max_abs": float(np.abs(err).max()),
            "nan": int(np.isnan(pred).sum()),
            "build_s": round(t1 - t0, 2),
            "eval_s": round(time.perf_counter() - t1, 2),
        }
    return out


def _fold_of(name: str) -> str:
    return next(k for k, v in FOLDS.items() if name in v)


def _check_fold(weights: Path, name: str) -> dict:
    rec = json.loads(weights.with_suffix(".json").read_text())
    data = rec.get("data", {})
    if name in data.get("maps", []) or name not in data.get("excluded", []):
        raise SystemExit(f"{weights}: {name} was in this network's training data; refusing")
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--folds-dir", type=Path, default=REPO / "benchmarks" / "out" / "learned")
    p.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="train missing fold networks here for this many minutes each",
    )
    p.add_argument("--maps", nargs="+", default=None, help="map names (default: all)")
    p.add_argument("--edge", type=int, default=4, help="voxels excluded at the box edge")
    p.add_argument("--threshold", type=float, default=0.1, help="truth above this counts")
    p.add_argument("--max-points", type=int, default=300_000)
    p.add_argument("--neural", action="store_true", help="also the fast neural field (slow)")
    p.add_argument(
        "--time-threads",
        type=int,
        default=2,
        help="torch threads for the 100^3 inference timing (0: skip it)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for the test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    from neural_em.fields.classical import FourierDensityMap, TrilinearDensityMap
    from neural_em.fields.learned import LearnedDensityMap, load_weights

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from learned_train import SHARED_MAPS

    from neural_em.fields.spline import SplineDensityMap
    from neural_em.voxelmap import read_map

    names = args.maps or [n for fold in FOLDS.values() for n in fold]
    notes: list[str] = []
    for fold, members in FOLDS.items():
        w = args.folds_dir / f"fold_{fold}.safetensors"
        if not w.is_file() and args.train_minutes and any(n in names for n in members):
            cmd = [
                sys.executable,
                str(Path(__file__).resolve().parents[1] / "tools" / "learned_train.py"),
                "--data-dir",
                str(DATA),
                "--out",
                str(w),
                "--minutes",
                str(args.train_minutes),
                "--threads",
                "1",
            ] + [a for n in members for a in ("--exclude", n)]
            print("training:", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {}
    started = time.time()
    load0 = os.getloadavg()
    for name in names:
        path = DATA / SHARED_MAPS[name][0]
        if not path.is_file():
            notes.append(f"skipped {name}: {path} absent")
            continue
        vmap = read_map(path)
        if not np.allclose(vmap.voxel_size, vmap.voxel_size[0], rtol=1e-3):
            notes.append(f"skipped {name}: anisotropic voxel {vmap.voxel_size.tolist()}")
            continue
        fold = _fold_of(name)
        wpath = args.folds_dir / f"fold_{fold}.safetensors"
        if not wpath.is_file():
            notes.append(f"skipped {name}: {wpath} missing (train it, see --help)")
            continue
        rec = _check_fold(wpath, name)
        weights = load_weights(wpath)
        builders = {
            "learned": lambda c, w=weights: LearnedDensityMap(c, weights=w),
            "fourier": FourierDensityMap,
            "spline": SplineDensityMap,
            "trilinear": TrilinearDensityMap,
        }
        if args.neural:
            from neural_em.fields.neural import NeuralDensityMap

            builders["neural-fast"] = lambda c: NeuralDensityMap.from_voxel_data(
                c, preset="fast", seed=args.seed
            )
        r = decimation_test(
            vmap,
            builders,
            edge=args.edge,
            threshold=args.threshold,
            max_points=args.max_points,
            seed=args.seed,
        )
        r.update(
            fold=fold,
            simulated=name in SIMULATED,
            train_steps=rec.get("steps"),
            train_s=rec.get("train_s"),
        )
        m = r["methods"]
        r["learned_over_fourier"] = m["learned"]["mae"] / m["fourier"]["mae"]
        r["learned_over_spline"] = m["learned"]["mae"] / m["spline"]["mae"]
        results[name] = r
        print(
            f"{name}: "
            + ", ".join(f"{k} {v['mae']:.5f}" for k, v in m.items())
            + f"  learned/Fourier {r['learned_over_fourier']:.3f}",
            file=sys.stderr,
        )
    timing = None
    if args.time_threads:
        torch.set_num_threads(args.time_threads)
        path = DATA / SHARED_MAPS["emd_3488"][0]
        if path.is_file():
            vm = read_map(path).normalised()
            t0 = time.perf_counter()
            LearnedDensityMap(vm)
            timing = {
                "map": "emd_3488",
                "shape_xyz": list(vm.shape_xyz),
                "threads": args.time_threads,
                "seconds": round(time.perf_counter() - t0, 2),
                "loadavg_before": os.getloadavg(),
            }
    cols = ["learned", "fourier", "spline", "trilinear"] + (["neural-fast"] if args.neural else [])
    lines = [
        "| map | fold | "
        + " | ".join(f"MAE {c}" for c in cols)
        + " | learned / Fourier | learned / spline |",
        "|---|---|" + "---|" * (len(cols) + 2),
    ]
    for name, r in results.items():
        lab = name + (" (simulated)" if r["simulated"] else "")
        lines.append(
            f"| {lab} | {r['fold']} | "
            + " | ".join(f"{r['methods'][c]['mae']:.5f}" for c in cols)
            + f" | {r['learned_over_fourier']:.3f} | {r['learned_over_spline']:.3f} |"
        )
    summary = {}
    for subset, keep in (("real", lambda r: not r["simulated"]), ("all", lambda r: True)):
        rs = [r for r in results.values() if keep(r)]
        if rs:
            lf = [r["learned_over_fourier"] for r in rs]
            ls = [r["learned_over_spline"] for r in rs]
            summary[subset] = {
                "maps": len(rs),
                "mean_learned_over_fourier": float(np.mean(lf)),
                "maps_10pct_below_fourier": int(sum(v <= 0.9 for v in lf)),
                "maps_below_fourier": int(sum(v < 1 for v in lf)),
                "maps_below_spline": int(sum(v < 1 for v in ls)),
                "any_nan": any(m["nan"] for r in rs for m in r["methods"].values()),
            }
    print("\n".join(lines))
    print(json.dumps(summary, indent=1))
    if timing:
        print(
            f"learned field on the {timing['shape_xyz']} map with {timing['threads']} "
            f"threads: {timing['seconds']} s"
        )
    for n in notes:
        print("note:", n)
    if args.figure and results:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        labels = list(results)
        x = np.arange(len(labels))
        colours = {
            "learned": "#d62728",
            "spline": "#1f77b4",
            "trilinear": "#2ca02c",
            "neural-fast": "#ff7f0e",
        }
        others = [c for c in cols if c != "fourier"]
        width = 0.8 / len(others)
        for i, c in enumerate(others):
            ax.bar(
                x + (i - (len(others) - 1) / 2) * width,
                [
                    results[n]["methods"][c]["mae"] / results[n]["methods"]["fourier"]["mae"]
                    for n in labels
                ],
                width,
                label=c,
                color=colours.get(c),
            )
        ax.axhline(1.0, color="#9467bd", lw=1, label="Fourier")
        ax.axhline(0.9, color="k", lw=0.8, ls="--", label="target (0.9 x Fourier)")
        ax.set_xticks(x, [n.replace("sim_", "sim ") for n in labels], rotation=20)
        ax.set_ylabel("MAE / Fourier's MAE")
        ax.set_ylim(0.6, max(1.6, ax.get_ylim()[1]))
        ax.set_title("Held-out voxels (keep every other voxel), maps never seen in training")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=120)
        print(f"wrote {args.figure}")
    if args.out:
        from neural_em.atomic import atomic_write_text

        rec = {
            "command": " ".join(["benchmarks/bench_learned.py"] + (argv or sys.argv[1:])),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
            "wall_s": round(time.time() - started, 1),
            "notes": notes,
            "summary": summary,
            "timing_100": timing,
            "table": lines,
            "maps": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(rec, indent=1) + "\n", overwrite=True)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
