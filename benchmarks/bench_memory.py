"""Peak memory of ``neural-em graph`` on EMD-11007 (240³, unmasked, 0.834 Å) with the spline
field: the reliability issue's target is under 4 GB.

Runs the command in a child process and reads its peak resident memory (``ru_maxrss`` of
the children, the figure ``/usr/bin/time -v`` reports as "Maximum resident set size"), plus
wall time. Optionally also profiles the same graph in-process step by step (``--steps``):
peak memory of reading, the spline fit, seeding, walking, clustering and edges.

    python benchmarks/bench_memory.py                 # writes benchmarks/out/memory.json
    python benchmarks/bench_memory.py --steps         # and the per-step profile

Numbers go to ``benchmarks/out/memory.json`` (and the test-report folder for
``tools/test_report.py``).
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
DEFAULT_MAP = REPO.parent / "shared" / "data" / "emd_11007" / "emd_11007.map"
TARGET_GB = 4.0


def measure_cli(map_path: Path, resolution: float, extra: list[str]) -> dict:
    """Run the graph command in a child process; peak RSS and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "g.graph.json"
        argv = [
            sys.executable,
            "-m",
            "neural_em.cli.main",
            "-q",
            "graph",
            str(map_path),
            "--field",
            "spline",
            "--resolution",
            str(resolution),
            "-o",
            str(out),
            *extra,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            raise SystemExit(f"graph failed ({proc.returncode}): {proc.stderr.strip()}")
        if peak_kb <= before:
            print(
                "warning: an earlier child had a higher peak; the figure is an upper bound",
                file=sys.stderr,
            )
        graph = json.loads(out.read_text())
    return {
        "command": " ".join(
            [
                "neural-em",
                *argv[3:5],
                os.path.relpath(map_path, REPO),
                *argv[6:-2],
                "-o",
                "G.graph.json",
            ]
        ),
        "peak_rss_bytes": peak_kb * 1024,
        "peak_rss_gb": round(peak_kb * 1024 / 1e9, 3),
        "wall_s": round(wall, 2),
        "nodes": len(graph.get("nodes", [])),
        "edges": len(graph.get("edges", graph.get("links", []))),
        "stdout": proc.stdout.strip().splitlines()[-1:] if proc.stdout else [],
    }


STEP_PROFILE = r"""
import json, sys, time
import numpy as np

def peak_mb():
    with open("/proc/self/status") as h:
        for line in h:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

def reset():
    try:
        with open("/proc/self/clear_refs", "w") as h:
            h.write("5")
    except OSError:
        pass

def rss_mb():
    with open("/proc/self/status") as h:
        for line in h:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

from neural_em.voxelmap import load_normalised
from neural_em.fields.spline import SplineDensityMap
from neural_em.graph import density_graph as dg

path, resolution = sys.argv[1], float(sys.argv[2])
steps = {}
def step(name, fn):
    reset(); base = rss_mb(); t = time.perf_counter()
    out = fn()
    steps[name] = {"peak_mb": round(peak_mb(), 1), "rss_before_mb": round(base, 1),
                   "peak_rise_mb": round(peak_mb() - base, 1),
                   "seconds": round(time.perf_counter() - t, 2)}
    return out

vmap = step("read + normalise", lambda: load_normalised(path))
field = step("spline fit", lambda: SplineDensityMap(vmap))
del vmap
spacing = float(min(0.5, float(np.min(field.voxel_size))))
threshold = dg.default_seed_threshold(field)
seeds, values = step("seeding", lambda: dg.seed_points(field, spacing_A=spacing,
                                                       threshold=threshold))
ends, nsteps, capped = step("walking", lambda: dg.walk_uphill(field, seeds, values, threads=2))
labels = step("clustering", lambda: dg.cluster_points(ends, 0.2))
centroids = dg.cluster_centroids(ends, labels)
edges = step("edges", lambda: dg.radius_edges(centroids, 2 * resolution))
print(json.dumps({"steps": steps, "seeds": int(len(seeds)), "nodes_before_pruning":
                  int(len(centroids)), "edges": int(len(edges))}))
"""


def measure_steps(map_path: Path, resolution: float) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", STEP_PROFILE, str(map_path), str(resolution)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", type=Path, default=DEFAULT_MAP)
    parser.add_argument("--resolution", type=float, default=2.9)
    parser.add_argument("--steps", action="store_true", help="also profile each step")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "memory.json")
    args = parser.parse_args(argv)
    if not args.map.is_file():
        print(f"skipped: {args.map} is absent (../shared/data not beside the repo)")
        return 0
    result = {
        "map": str(args.map),
        "resolution_A": args.resolution,
        "target_gb": TARGET_GB,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "shared, loaded 2-core machine",
        },
        "graph": measure_cli(args.map, args.resolution, []),
    }
    result["under_target"] = result["graph"]["peak_rss_gb"] < TARGET_GB
    if args.steps:
        result["steps"] = measure_steps(args.map, args.resolution)
    text = json.dumps(result, indent=2)
    print(text)
    for out in (
        args.out,
        Path(
            os.environ.get("NEURAL_EM_TEST_REPORT_DIR", REPO / "benchmarks" / "out" / "test_report")
        )
        / "memory.json",
    ):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, out)
    return 0 if result["under_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
