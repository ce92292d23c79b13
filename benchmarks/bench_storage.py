"""Storage benchmark: bytes against error for the ways a user could store a map.

For each map of ../shared/data (normalised by the study's rule: negatives to 0, then min-max to
[0, 1]; the errors below are on that scale), every storage method writes the normalised map,
reads it back, and reports its size in bytes (and relative to the float32 MRC) and the mean and
maximum absolute error over all voxels:

* float32 MRC and float16 MRC (mrcfile, mode 2 and mode 12);
* gzip of the float32 MRC (level 6, lossless);
* ZFP (zfpy) in fixed-accuracy mode at tolerances ``--tolerances``;
* SZ3 (pysz) with an absolute error bound at ``--tolerances``;
* the ``.neural`` file of the fast preset (one SIREN per region): fitting it takes minutes per
  map on a CPU, so by default its point comes from the measurement recorded in docs/neural.md
  (EMD-3488 cropped at contour 0.1, benchmarks/bench_neural.py); ``--fit-neural`` fits it here
  on that crop instead.

A compressor whose Python package is missing is skipped with a note (``pip install
neural-em[storage]`` installs zfpy and pysz).

    python benchmarks/bench_storage.py --out benchmarks/out/storage.json \\
        --figure docs/figures/storage_rate_distortion.png
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
#: (label, path under ../shared/data, contour to crop at or None)
MAPS = (
    ("emd_3488 (crop 0.1)", "emd_3488/emd_3488.mrc", 0.1),
    ("emd_6272", "emd_6272/emd_6272_zone.mrc", None),
    ("emd_5778", "emd_5778/emd_5778_chainA.mrc", None),
    ("emd_21457", "emd_21457/emd_21457_seg.mrc", None),
    ("emd_11007", "emd_11007/emd_11007.map", None),
    ("sim_3i2n", "simulated/3i2n/3i2n_sim3A.mrc", None),
)
#: The fast-preset .neural measurement of docs/neural.md (benchmarks/bench_neural.py,
#: EMD-3488 cropped at contour 0.1): bytes, mean and max absolute error, MRC bytes.
NEURAL_RECORD = {
    "neural fast float16": {"bytes": 651_800, "mean_abs": 0.00170, "max_abs": 0.0452},
    "neural fast float32": {
        "bytes": round(0.94 * 1_380_724),
        "mean_abs": 0.00169,
        "max_abs": 0.0438,
    },
    "mrc_bytes": 1_380_724,
    "note": "recorded in docs/neural.md (bench_neural.py on EMD-3488, contour 0.1 crop); "
    "the float32 file size is the recorded 0.94x the MRC (bytes not recorded)",
}


def _errors(restored: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    d = np.abs(restored.astype(np.float64) - ref.astype(np.float64))
    return float(d.mean()), float(d.max())


def _mrc_bytes(vmap, tmp: Path, mode16: bool) -> tuple[int, np.ndarray]:
    import mrcfile

    path = tmp / ("m16.mrc" if mode16 else "m32.mrc")
    data = vmap.data.astype(np.float16 if mode16 else np.float32)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = tuple(float(v) for v in vmap.voxel_size)
    with mrcfile.open(path, permissive=True) as m:
        back = np.asarray(m.data, dtype=np.float32)
    return path.stat().st_size, back


def measure_map(vmap, tolerances: list[float], notes: list[str]) -> dict[str, dict]:
    ref = np.ascontiguousarray(vmap.data, dtype=np.float32)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        n32, back = _mrc_bytes(vmap, tmp, False)
        out["float32 MRC"] = {"bytes": n32, "mean_abs": 0.0, "max_abs": 0.0}
        n16, back16 = _mrc_bytes(vmap, tmp, True)
        mean, mx = _errors(back16, ref)
        out["float16 MRC"] = {"bytes": n16, "mean_abs": mean, "max_abs": mx}
        raw = (tmp / "m32.mrc").read_bytes()
        t = time.perf_counter()
        gz = gzip.compress(raw, compresslevel=6)
        out["gzip MRC"] = {
            "bytes": len(gz),
            "mean_abs": 0.0,
            "max_abs": 0.0,
            "compress_s": time.perf_counter() - t,
        }
    try:
        import zfpy
    except ImportError:
        notes.append("ZFP skipped: zfpy is not installed (pip install neural-em[storage])")
    else:
        for tol in tolerances:
            t = time.perf_counter()
            comp = zfpy.compress_numpy(ref, tolerance=tol)
            dt = time.perf_counter() - t
            mean, mx = _errors(zfpy.decompress_numpy(comp), ref)
            out[f"ZFP tol {tol:g}"] = {
                "bytes": len(comp),
                "mean_abs": mean,
                "max_abs": mx,
                "compress_s": dt,
                "bound": tol,
                "method": "ZFP",
            }
    try:
        from pysz import sz, szConfig, szErrorBoundMode
    except ImportError:
        notes.append("SZ3 skipped: pysz is not installed (pip install neural-em[storage])")
    else:
        for tol in tolerances:
            cfg = szConfig()
            cfg.errorBoundMode = szErrorBoundMode.ABS
            cfg.absErrorBound = tol
            t = time.perf_counter()
            comp, _ = sz.compress(ref, cfg)
            dt = time.perf_counter() - t
            back, _ = sz.decompress(comp, np.float32, ref.shape)
            mean, mx = _errors(back, ref)
            out[f"SZ3 abs {tol:g}"] = {
                "bytes": int(comp.nbytes),
                "mean_abs": mean,
                "max_abs": mx,
                "compress_s": dt,
                "bound": tol,
                "method": "SZ3",
            }
    for v in out.values():
        v["ratio_to_mrc"] = v["bytes"] / n32
        v["bits_per_voxel"] = 8.0 * v["bytes"] / ref.size
    return out


def fit_neural_point(path: Path, contour: float, tmp: Path) -> dict[str, dict]:
    """Fit the fast preset on the contour crop and measure its float16 and float32 files."""
    from neural_em.fields.neural import NeuralDensityMap
    from neural_em.voxelmap import load_normalised

    vmap = load_normalised(path, contour=contour)
    field = NeuralDensityMap.from_voxel_data(vmap, preset="fast", seed=0)
    back = field.to_voxel_density_map(vmap.voxel_size).data
    mean, mx = _errors(back, vmap.data)
    out = {}
    for f16 in (True, False):
        p = field.save(tmp / f"f{int(f16)}.neural", float16=f16)
        out[f"neural fast float{16 if f16 else 32}"] = {
            "bytes": p.stat().st_size,
            "mean_abs": mean,
            "max_abs": mx,
        }
    return out


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    styles = {"ZFP": ("#1f77b4", "o"), "SZ3": ("#d62728", "s")}
    for ax, key, label in (
        (axes[0], "mean_abs", "mean abs error"),
        (axes[1], "max_abs", "max abs error"),
    ):
        for map_label, rows in results.items():
            for method, (col, mk) in styles.items():
                pts = sorted(
                    (r["ratio_to_mrc"], r[key]) for r in rows.values() if r.get("method") == method
                )
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        color=col,
                        marker=mk,
                        alpha=0.55,
                        lw=1,
                        label=method if map_label == next(iter(results)) else None,
                    )
            f16 = rows.get("float16 MRC")
            if f16:
                ax.plot(
                    f16["ratio_to_mrc"],
                    f16[key],
                    "^",
                    color="#2ca02c",
                    label="float16 MRC" if map_label == next(iter(results)) else None,
                )
            for name, r in rows.items():
                if name.startswith("neural"):
                    ax.plot(
                        r["ratio_to_mrc"],
                        r[key],
                        "D",
                        color="#9467bd",
                        ms=8,
                        label=name + " (EMD-3488 crop)",
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("size / float32 MRC (gzip of the MRC: lossless, shown in the table)")
        ax.set_ylabel(label + " (normalised map)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left", framealpha=0.9)
    fig.suptitle("Storage: size against error, shared maps (each line one map)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v: float) -> str:
    return "0" if v == 0 else f"{v:.2g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--tolerances",
        type=float,
        nargs="+",
        default=[1e-2, 3e-3, 1e-3, 1e-4],
        help="ZFP tolerances and SZ3 absolute error bounds (normalised density)",
    )
    p.add_argument(
        "--fit-neural",
        action="store_true",
        help="fit the fast .neural file here instead of the recorded measurement",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.add_argument("--figure", type=Path, default=None, help="rate-distortion PNG")
    args = p.parse_args(argv)

    from neural_em.voxelmap import load_normalised

    notes: list[str] = []
    results: dict[str, dict] = {}
    started = time.time()
    for label, rel, contour in MAPS:
        path = DATA / rel
        if not path.is_file():
            notes.append(f"skipped {label}: {path} is absent")
            continue
        vmap = load_normalised(path, contour=contour)
        rows = measure_map(vmap, args.tolerances, notes)
        if contour is not None and rel.startswith("emd_3488"):
            if args.fit_neural:
                with tempfile.TemporaryDirectory() as tmpd:
                    neural = fit_neural_point(path, contour, Path(tmpd))
                notes.append("neural fast: fitted in this run")
            else:
                neural = {k: dict(v) for k, v in NEURAL_RECORD.items() if k.startswith("neural")}
                notes.append("neural fast: " + NEURAL_RECORD["note"])
                mrc = rows["float32 MRC"]["bytes"]
                if abs(mrc - NEURAL_RECORD["mrc_bytes"]) > 4096:
                    notes.append(
                        f"note: this crop's MRC is {mrc} bytes, the record's "
                        f"{NEURAL_RECORD['mrc_bytes']}"
                    )
            for v in neural.values():
                v["ratio_to_mrc"] = v["bytes"] / rows["float32 MRC"]["bytes"]
                v["bits_per_voxel"] = 8.0 * v["bytes"] / vmap.data.size
            rows.update(neural)
        results[f"{label} {vmap.shape_xyz[0]}x{vmap.shape_xyz[1]}x{vmap.shape_xyz[2]}"] = rows
        print(f"measured {label}", file=sys.stderr)
    notes = list(dict.fromkeys(notes))
    methods = list(dict.fromkeys(m for rows in results.values() for m in rows))
    lines = [
        "| method | size / float32 MRC (median over maps) | bits/voxel | mean abs error "
        "(median) | max abs error (worst map) |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        rs = [rows[m] for rows in results.values() if m in rows]
        lines.append(
            f"| {m}{' (1 map)' if len(rs) == 1 else ''} "
            f"| {np.median([r['ratio_to_mrc'] for r in rs]):.3f} "
            f"| {np.median([r['bits_per_voxel'] for r in rs]):.2f} "
            f"| {_fmt(float(np.median([r['mean_abs'] for r in rs])))} "
            f"| {_fmt(max(r['max_abs'] for r in rs))} |"
        )
    print("\n".join(lines))
    print()
    per_map = ["| map | method | bytes | / MRC | mean abs | max abs |", "|---|---|---|---|---|---|"]
    for label, rows in results.items():
        for m, r in rows.items():
            per_map.append(
                f"| {label} | {m} | {r['bytes']} | {r['ratio_to_mrc']:.4f} "
                f"| {_fmt(r['mean_abs'])} | {_fmt(r['max_abs'])} |"
            )
    print("\n".join(per_map))
    for n in notes:
        print(f"note: {n}")
    if args.figure:
        figure(results, args.figure)
        print(f"wrote {args.figure}")
    if args.out:
        from neural_em.atomic import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        rec = {
            "command": " ".join(["benchmarks/bench_storage.py"] + (argv or sys.argv[1:])),
            "notes": notes,
            "wall_s": time.time() - started,
            "summary": lines,
            "maps": results,
        }
        atomic_write_text(
            args.out, json.dumps(rec, indent=1, allow_nan=False) + "\n", overwrite=True
        )
        print(f"wrote {args.out}")
    return (
        0
        if all(math.isfinite(r["mean_abs"]) for rows in results.values() for r in rows.values())
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
