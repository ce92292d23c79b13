"""Neural map benchmark on EMD-3488 (issue 2, "What it must show" items 1-3).

1. Reconstruction: ``neural-em fit emd_3488.mrc --contour 0.1 --preset fast`` then
   ``neural-em resample`` at the original voxel size; mean and max absolute error against the
   normalised, cropped input over the fitted box; fit time (wall and CPU).
2. Speed: on one 32³ region of EMD-3488 (the 32³ box with the most density inside the contour
   crop), time for the ``fast`` and the ``paper`` preset to reach a training MSE of 1e-4
   (targets on [-1, 1]), side by side in one run, and their ratio. The paper preset runs
   without its patience rule (which stops it before the target) for at most
   ``--paper-limit-s``.
3. Size: the ``.neural`` files (fast float32, fast float16, paper) against the float32 MRC of
   the same box. The file size does not depend on training, so the paper file comes from a
   one-epoch fit.

    python benchmarks/bench_neural.py --out benchmarks/out/neural.json

Timings depend on the machine and its load: the JSON records the platform, the CPU count, the
load average before and after, and CPU seconds beside wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAP = REPO.parent / "shared" / "data" / "emd_3488" / "emd_3488.mrc"
CONTOUR = 0.1
TARGET_MSE = 1e-4


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cli(*args: str) -> tuple[float, float, str]:
    """Run ``neural-em ARGS``; returns (wall s, CPU s, stdout)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "neural_em.cli.main", "-q", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"neural-em {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - t0, _children_cpu() - cpu0, proc.stdout


def reconstruction(work: Path) -> dict:
    import numpy as np

    from neural_em.fields.neural import NeuralDensityMap, fit_report
    from neural_em.voxelmap import load_normalised, read_map

    ref = load_normalised(MAP, contour=CONTOUR)
    out = {"map": str(MAP.name), "contour": CONTOUR, "box_xyz": list(ref.shape_xyz), "commands": []}
    f32 = work / "emd_3488_fast.neural"
    cmd = ["fit", str(MAP), "--contour", str(CONTOUR), "--preset", "fast", "-o", str(f32)]
    wall, cpu, stdout = _cli(*cmd)
    out["commands"].append("neural-em " + " ".join(cmd))
    out["fit_wall_s"], out["fit_cpu_s"] = round(wall, 1), round(cpu, 1)
    field = NeuralDensityMap.load(f32)
    out["fit_report"] = fit_report(field)
    f16 = field.save(work / "emd_3488_fast16.neural", float16=True)
    for name, path in (("float32", f32), ("float16", f16)):
        mrc = path.with_suffix(".mrc")
        cmd = ["resample", str(path), "-o", str(mrc)]
        wall, cpu, _ = _cli(*cmd)
        out["commands"].append("neural-em " + " ".join(cmd))
        rec = read_map(mrc)
        assert rec.data.shape == ref.data.shape
        err = np.abs(rec.data.astype(np.float64) - ref.data)
        out[name] = {
            "mean_abs_error": float(err.mean()),
            "max_abs_error": float(err.max()),
            "voxels_over_0.05": int((err > 0.05).sum()),
            "file_bytes": path.stat().st_size,
            "mrc_bytes": mrc.stat().st_size,
            "size_ratio": path.stat().st_size / mrc.stat().st_size,
            "resample_wall_s": round(wall, 1),
        }
    out["targets"] = {
        "mean_abs_error": 0.005,
        "max_abs_error": 0.05,
        "fit_s": 300,
        "size_ratio": 0.5,
    }
    return out


def densest_box(data, edge: int = 32) -> tuple[int, int, int]:
    """x, y, z start of the ``edge``³ box with the largest density sum."""
    import numpy as np

    c = np.pad(data.astype(np.float64).cumsum(0).cumsum(1).cumsum(2), ((1, 0),) * 3)
    e = edge
    s = (
        c[e:, e:, e:]
        - c[:-e, e:, e:]
        - c[e:, :-e, e:]
        - c[e:, e:, :-e]
        + c[:-e, :-e, e:]
        + c[:-e, e:, :-e]
        + c[e:, :-e, :-e]
        - c[:-e, :-e, :-e]
    )
    z, y, x = np.unravel_index(np.argmax(s), s.shape)
    return int(x), int(y), int(z)


def speed(paper_limit_s: float) -> dict:
    import dataclasses

    from neural_em.fields import presets
    from neural_em.fields.neural import NeuralDensityMap
    from neural_em.voxelmap import load_normalised

    ref = load_normalised(MAP, contour=CONTOUR)
    x, y, z = densest_box(ref.data)
    sub = ref.subbox((x, y, z), (x + 32, y + 32, z + 32))
    out = {"box_lo_xyz_in_crop": [x, y, z], "edge": 32, "target_mse": TARGET_MSE}
    fast = dataclasses.replace(presets.PRESETS["fast"], eval_every=1)
    # The paper preset runs without its patience rule here, which would stop it before it
    # reaches the target (measured: at MSE 3.2e-4): the comparison is the time to the target.
    paper = dataclasses.replace(
        presets.get_preset("paper", time_budget_s=paper_limit_s), patience_epochs=None
    )
    runs = {"fast": dict(preset=fast), "paper": dict(preset=paper)}
    for name, kw in runs.items():
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        field = NeuralDensityMap.from_voxel_data(sub, preset=kw["preset"], seed=0)
        total = time.perf_counter() - t0
        hist = field.history  # [group, seconds, epoch, loss, cpu]
        reached = next((h for h in hist if h[3] <= TARGET_MSE), None)
        out[name] = {
            "regions": len(field.trained),
            "network": field.metadata["network"]["widths"],
            "seconds_to_target": None if reached is None else round(reached[1], 2),
            "cpu_seconds_to_target": None if reached is None else round(reached[4] - cpu0, 2),
            "epochs_to_target": None if reached is None else int(reached[2]),
            "final_loss": hist[-1][3],
            "total_s": round(total, 1),
            "stop_counts": field.metadata["training"]["stop_counts"],
        }
    f, p = out["fast"], out["paper"]
    if f["seconds_to_target"] and p["seconds_to_target"]:
        out["ratio_wall"] = p["seconds_to_target"] / f["seconds_to_target"]
        out["ratio_cpu"] = p["cpu_seconds_to_target"] / f["cpu_seconds_to_target"]
    elif f["seconds_to_target"]:
        out["ratio_wall_at_least"] = p["total_s"] / f["seconds_to_target"]
        out["note"] = (
            f"paper did not reach the target within {paper_limit_s} s; the ratio is a lower bound"
        )
    return out


def paper_size(work: Path) -> dict:
    from neural_em.fields.neural import NeuralDensityMap

    field = NeuralDensityMap.from_voxel_map(MAP, CONTOUR, preset="paper", max_epochs=1)
    path = field.save(work / "emd_3488_paper.neural")
    mrc = field.save_as_voxel_map(work / "emd_3488_paper.mrc")
    return {
        "regions": len(field.trained),
        "parameters": field.n_parameters,
        "file_bytes": path.stat().st_size,
        "mrc_bytes": mrc.stat().st_size,
        "size_ratio": path.stat().st_size / mrc.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "neural.json")
    p.add_argument(
        "--paper-limit-s",
        type=float,
        default=900.0,
        help="time budget of the paper preset in the speed comparison",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=["reconstruction", "speed", "size"])
    args = p.parse_args(argv)
    if not MAP.exists():
        print(f"skipped: {MAP} is absent (the shared data folder beside the repository)")
        return 0
    import torch

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": list(os.getloadavg()),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "reconstruction" not in args.skip:
            result["reconstruction"] = reconstruction(work)
            print(json.dumps(result["reconstruction"], indent=1), flush=True)
        if "speed" not in args.skip:
            result["speed"] = speed(args.paper_limit_s)
            print(json.dumps(result["speed"], indent=1), flush=True)
        if "size" not in args.skip:
            result["size"] = {"paper": paper_size(work)}
            if "reconstruction" in result:
                for name in ("float32", "float16"):
                    r = result["reconstruction"][name]
                    result["size"][f"fast_{name}"] = {
                        k: r[k] for k in ("file_bytes", "mrc_bytes", "size_ratio")
                    }
            print(json.dumps(result["size"], indent=1), flush=True)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    from neural_em.atomic import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
