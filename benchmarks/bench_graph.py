"""Benchmark of density graphs on the real and simulated maps of ../shared/data.

For each map: the spline field, the graph with the study's defaults (adjacency 2 x
resolution), its metrics against the deposited model, the local-maximum baseline, the
seconds of each step (wall and CPU), and the same with each ``--refine`` option. Writes JSON
to ``--out`` and prints markdown tables. ``--neural`` also fits a fast neural field of
EMD-3488 (where ``neural_em.fields.neural`` exists) and times its graph.

    python benchmarks/bench_graph.py                      # all maps, both methods, refine none + ridge
    python benchmarks/bench_graph.py --methods backbone --refine none   # the backbone graph only
    python benchmarks/bench_graph.py --maps emd_3488 --neural
    python benchmarks/bench_graph.py --maps none --memory   # EMD-11007 peak memory only
    python benchmarks/bench_graph.py --methods backbone --refine none --no-sse  # no helices
    python benchmarks/bench_graph.py --methods backbone --refine none --blur 1.2  # as at ~5.6 Å
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

#: name, map, model, resolution (Å), reference recall and precision of an independent
#: implementation of the same method.
MAPS = [
    ("emd_3488", "emd_3488/emd_3488.mrc", "emd_3488/5ni1.cif", 3.2, 0.946, 0.719),
    ("emd_6272", "emd_6272/emd_6272_zone.mrc", "emd_6272/3j9s.pdb", 2.6, 0.957, 0.682),
    ("emd_5778", "emd_5778/emd_5778_chainA.mrc", "emd_5778/3j5p.pdb", 3.28, 0.601, 0.589),
    ("emd_21457", "emd_21457/emd_21457_seg.mrc", "emd_21457/6vyb_Ndom.pdb", 3.2, 0.626, 0.672),
    ("3i2n", "simulated/3i2n/3i2n_sim3A.mrc", "simulated/3i2n/3i2n.pdb", 3.0, 1.0, 0.748),
    ("3qc7", "simulated/3qc7/3qc7_sim3A.mrc", "simulated/3qc7/3qc7.pdb", 3.0, 1.0, 0.713),
    ("6g61", "simulated/6g61/6g61_sim3A.mrc", "simulated/6g61/6g61.pdb", 3.0, 1.0, 0.676),
]


#: The real maps with models (the issue's targets are means over these).
REAL_MAPS = ("emd_3488", "emd_6272", "emd_5778", "emd_21457")


def _metrics(r: dict[str, Any]) -> dict[str, Any]:
    """The graph metrics the pipeline records (``GRAPH_KEYS``) from an evaluation."""
    from neural_em.pipeline.collect import GRAPH_KEYS

    return {k: r.get(k) for k in GRAPH_KEYS}


def run_map(
    entry: tuple,
    refine: str,
    *,
    threads: int | None,
    data: Path,
    with_baseline: bool,
    method: str = "study",
    backbone: dict[str, Any] | None = None,
    blur_A: float = 0.0,
) -> dict[str, Any] | None:
    """One map's graph by ``method`` and its metrics; ``blur_A``: the map low-passed first
    by a Gaussian of that sigma (Å), its resolution taken as ``resolution + 2 blur_A``: the
    shared maps as 3.8-5 Å maps would show them."""
    from neural_em.fields.spline import SplineDensityMap
    from neural_em.graph import DensityGraph
    from neural_em.graph.evaluate import evaluate_graph
    from neural_em.graph.methods import build_graph
    from neural_em.models import read_model
    from neural_em.voxelmap import load_normalised

    name, map_rel, model_rel, res, ref_recall, ref_precision = entry
    map_path, model_path = data / map_rel, data / model_rel
    if not map_path.is_file() or not model_path.is_file():
        print(
            f"skipping {name}: {map_path if not map_path.is_file() else model_path} absent",
            file=sys.stderr,
        )
        return None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if blur_A > 0:
        vmap = load_normalised(map_path)
        sigma = blur_A / np.asarray(vmap.voxel_size, dtype=float)[::-1]
        vmap.data = scipy.ndimage.gaussian_filter(vmap.data, sigma).astype(np.float32)
        field = SplineDensityMap(vmap)
        res = res + 2.0 * blur_A
    else:
        field = SplineDensityMap.from_voxel_map(map_path)
    field_s = time.perf_counter() - wall0
    if method == "study":
        graph = DensityGraph.from_field(
            field,
            adjacency_threshold=2.0 * res,
            resolution_A=res,
            refine=refine,
            threads=threads,
            source=str(map_path),
        )
    else:
        graph = build_graph(
            field, method=method, resolution_A=res, source=str(map_path), backbone=backbone
        )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    model = read_model(model_path)
    baseline = load_normalised(map_path) if with_baseline else None
    r = evaluate_graph(graph, model, baseline_map=baseline)
    out = {
        "map": name,
        "resolution_A": res,
        "method": method,
        "refine": refine,
        **_metrics(r),
        "seconds_wall": wall,
        "seconds_cpu": cpu,
        "seconds_field": field_s,
        "steps": {k: v for k, v in graph.timings.items()},
        "stats": graph.stats,
        "reference": {"recall": ref_recall, "precision": ref_precision},
        "diff_recall": r["recall"] - ref_recall,
        "diff_precision": r["precision"] - ref_precision,
        "blur_A": blur_A,
        "ca_helix": r.get("ca_helix"),
        "label_counts": sse_label_counts(graph, model),
    }
    if "baseline" in r:
        out["baseline"] = _metrics(r["baseline"])
    return out


def sse_label_counts(graph: Any, model: Any) -> dict[str, dict[str, int]]:
    """:func:`~neural_em.graph.evaluate.label_counts` of the graph's node labels ({} where the
    nodes carry none): summed over maps, the pooled label precision and recall."""
    from neural_em.graph.evaluate import greedy_matching, label_counts, node_sse
    from neural_em.models import ca_secondary_structure

    labels = node_sse(graph)
    if labels is None:
        return {}
    matching = greedy_matching(model.ca, graph.positions, 3.0)
    return label_counts(ca_secondary_structure(model), labels, matching)


def run_neural_backbone(data: Path, preset: str, out_dir: Path) -> dict[str, Any] | None:
    """A fast neural field of the whole EMD-3488 map saved as .neural, then the backbone graph
    from that file (load + graph, the issue's "from a fitted .neural file")."""
    if importlib.util.find_spec("neural_em.fields.neural") is None:
        return None
    from neural_em.fields import load_field
    from neural_em.fields.neural import NeuralDensityMap
    from neural_em.graph.evaluate import evaluate_graph
    from neural_em.graph.methods import build_graph

    name, map_rel, model_rel, res, *_ = MAPS[0]
    path = out_dir / "emd_3488_fast.neural"
    t0 = time.perf_counter()
    if not path.is_file():
        NeuralDensityMap.from_voxel_map(data / map_rel, devices=("cpu",), preset=preset).save(path)
    fit_s = time.perf_counter() - t0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    field = load_field(path)
    graph = build_graph(field, method="backbone", resolution_A=res, source=str(path))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    r = evaluate_graph(graph, data / model_rel)
    return {
        "map": name,
        "field": f"neural ({preset}) from {path.name}",
        "fit_seconds": fit_s,
        **_metrics(r),
        "seconds_wall": wall,
        "seconds_cpu": cpu,
        "steps": graph.timings,
    }


def run_neural(data: Path, preset: str) -> dict[str, Any] | None:
    if importlib.util.find_spec("neural_em.fields.neural") is None:
        print("skipping --neural: neural_em.fields.neural is not in this build", file=sys.stderr)
        return None
    from neural_em.fields.neural import NeuralDensityMap
    from neural_em.graph import DensityGraph
    from neural_em.graph.evaluate import evaluate_graph

    name, map_rel, model_rel, res, ref_recall, ref_precision = MAPS[0]
    t0 = time.perf_counter()
    field = NeuralDensityMap.from_voxel_map(data / map_rel, devices=("cpu",), preset=preset)
    fit_s = time.perf_counter() - t0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    graph = DensityGraph.from_field(
        field, adjacency_threshold=2.0 * res, resolution_A=res, source=str(data / map_rel)
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    r = evaluate_graph(graph, data / model_rel)
    return {
        "map": name,
        "field": f"neural ({preset})",
        "fit_seconds": fit_s,
        **_metrics(r),
        "seconds_wall": wall,
        "seconds_cpu": cpu,
        "steps": graph.timings,
        "stats": graph.stats,
        "reference": {"recall": ref_recall, "precision": ref_precision},
    }


_MEMORY_SNIPPET = """
import json, sys, time
from neural_em.graph import graph_from_map
t = time.perf_counter()
g = graph_from_map(sys.argv[1], adjacency_A=5.8, resolution_A=2.9)
print(json.dumps({"nodes": len(g), "edges": g.graph.number_of_edges(), "stats": g.stats,
                  "timings": g.timings, "seconds_wall": time.perf_counter() - t}))
"""


def run_memory(data: Path) -> dict[str, Any] | None:
    """Peak memory of the spline graph of EMD-11007 (240^3 voxels of 0.834 Å), measured as
    the maximum resident set size of a child process that builds only that graph."""
    import subprocess

    path = data / "emd_11007" / "emd_11007.map"
    if not path.is_file():
        print(f"skipping --memory: {path} absent", file=sys.stderr)
        return None
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SNIPPET, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_rss_MB"] = peak_kb / 1024
    if peak_kb <= before:
        out["note"] = "an earlier child process had a higher peak"
    return {"map": "emd_11007", **out}


def _f(v: Any, d: int = 3) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def print_methods(rows: list[dict[str, Any]]) -> None:
    """The graph methods side by side, and their means over the real maps."""
    plain = [r for r in rows if r["refine"] == "none"]
    methods = list(dict.fromkeys(r["method"] for r in plain))
    if not plain:
        return
    keys = (
        "nodes_per_ca",
        "recall",
        "one_to_one_precision",
        "f1",
        "rmsd",
        "chain_recall",
        "edge_precision",
        "mean_degree",
    )
    print("\n### Graph methods (spline field)\n")
    print(
        "| map | method | nodes | nodes/CA | recall | 1:1 precision | F1 | RMSD Å | "
        "chain recall | edge precision | mean degree | seconds wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in plain:
        print(
            f"| {r['map']} | {r['method']} | {r['nodes']} | "
            + " | ".join(
                _f(r[k], 2 if k in ("nodes_per_ca", "rmsd", "mean_degree") else 3) for k in keys
            )
            + f" | {r['seconds_wall']:.1f} |"
        )
    for method in methods:
        real = [r for r in plain if r["method"] == method and r["map"] in REAL_MAPS]
        if real:
            means = {k: sum(r[k] for r in real) / len(real) for k in keys}
            print(
                f"| mean of {len(real)} real maps | {method} | – | "
                + " | ".join(
                    _f(means[k], 2 if k in ("nodes_per_ca", "rmsd", "mean_degree") else 3)
                    for k in keys
                )
                + " | – |"
            )


SSE_KEYS = (
    "recall_helix",
    "recall_strand",
    "recall_coil",
    "label_precision_helix",
    "label_recall_helix",
    "label_precision_strand",
    "label_recall_strand",
)


def _mean(values: list[Any]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def print_sse(rows: list[dict[str, Any]]) -> None:
    """Recall by the model's secondary structure (P-SEA) and the node labels' precision and
    recall, per map and method; means over the real maps and pooled label figures."""
    plain = [r for r in rows if r["refine"] == "none"]
    if not plain:
        return
    print("\n### By secondary structure (model classes by P-SEA; labels: backbone graph)\n")
    print(
        "| map | method | helix C-α | recall helix | recall strand | recall coil | "
        "helix labels P / R | strand labels P / R | helix axes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in plain:
        axes = r["stats"].get("helices", "–")
        print(
            f"| {r['map']} | {r['method']} | {r.get('ca_helix', '–')} | "
            f"{_f(r['recall_helix'])} | {_f(r['recall_strand'])} | {_f(r['recall_coil'])} | "
            f"{_f(r['label_precision_helix'])} / {_f(r['label_recall_helix'])} | "
            f"{_f(r['label_precision_strand'])} / {_f(r['label_recall_strand'])} | {axes} |"
        )
    for method in dict.fromkeys(r["method"] for r in plain):
        real = [r for r in plain if r["method"] == method and r["map"] in REAL_MAPS]
        if not real:
            continue
        m = {k: _mean([r[k] for r in real]) for k in SSE_KEYS}
        pooled = {}
        for c in ("helix", "strand"):
            if not all(r["label_counts"] for r in real):
                pooled[c] = (None, None)
                continue
            both = sum(r["label_counts"][c]["both"] for r in real)
            said = sum(r["label_counts"][c]["said"] for r in real)
            true = sum(r["label_counts"][c]["true"] for r in real)
            pooled[c] = (both / said if said else None, both / true if true else None)
        print(
            f"| mean of {len(real)} real maps (labels pooled) | {method} | – | "
            f"{_f(m['recall_helix'])} | {_f(m['recall_strand'])} | {_f(m['recall_coil'])} | "
            f"{_f(pooled['helix'][0])} / {_f(pooled['helix'][1])} | "
            f"{_f(pooled['strand'][0])} / {_f(pooled['strand'][1])} | – |"
        )


def print_tables(rows: list[dict[str, Any]], neural: dict[str, Any] | None) -> None:
    print("\n### Spline field, study defaults (adjacency 2 × resolution)\n")
    print(
        "| map | res Å | nodes | CA | recall (ref) | coverage | precision (ref) | RMSD Å | "
        "nodes/CA | seconds wall / CPU | seeding / walking / clustering / edges s | "
        "baseline nodes | baseline recall | baseline precision |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["refine"] != "none" or r["method"] != "study":
            continue
        s, b = r["steps"], r.get("baseline", {})
        print(
            f"| {r['map']} | {r['resolution_A']} | {r['nodes']} | {r['ca']} | "
            f"{_f(r['recall'])} ({r['reference']['recall']:.3f}) | {_f(r['coverage'])} | "
            f"{_f(r['precision'])} ({r['reference']['precision']:.3f}) | {_f(r['rmsd'], 2)} | "
            f"{_f(r['nodes_per_ca'], 2)} | {r['seconds_wall']:.1f} / {r['seconds_cpu']:.1f} | "
            f"{s['seeding']:.1f} / {s['walking']:.1f} / {s['clustering']:.2f} / "
            f"{s['edges']:.2f} | {b.get('nodes', '–')} | {_f(b.get('recall'))} | "
            f"{_f(b.get('precision'))} |"
        )
    print_methods(rows)
    print_sse(rows)
    refines = sorted({r["refine"] for r in rows} - {"none"})
    if refines:
        base = {r["map"]: r for r in rows if r["refine"] == "none" and r["method"] == "study"}
        print("\n### Refinement trade-off (same field and parameters)\n")
        print(
            "| map | refine | nodes | recall | precision | nodes/CA | RMSD Å | "
            "Δ recall | Δ precision | Δ nodes/CA | refine s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["refine"] == "none" or r["map"] not in base:
                continue
            b = base[r["map"]]
            print(
                f"| {r['map']} | {r['refine']} | {r['nodes']} | {_f(r['recall'])} | "
                f"{_f(r['precision'])} | {_f(r['nodes_per_ca'], 2)} | {_f(r['rmsd'], 2)} | "
                f"{r['recall'] - b['recall']:+.3f} | {r['precision'] - b['precision']:+.3f} | "
                f"{r['nodes_per_ca'] - b['nodes_per_ca']:+.2f} | {r['steps']['refine']:.2f} |"
            )
    if neural and "steps" in neural:
        s = neural["steps"]
        print("\n### Neural field (EMD-3488)\n")
        print(
            f"{neural['field']}: fit {neural['fit_seconds']:.1f} s; graph "
            f"{neural['seconds_wall']:.1f} s wall / {neural['seconds_cpu']:.1f} s CPU (seeding "
            f"{s['seeding']:.1f}, walking {s['walking']:.1f}); {neural['nodes']} nodes, recall "
            f"{_f(neural['recall'])}, precision {_f(neural['precision'])}, RMSD "
            f"{_f(neural['rmsd'], 2)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "graph.json")
    parser.add_argument("--maps", nargs="*", default=None, help="subset of map names")
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["study", "backbone"],
        help="graph methods (study, backbone)",
    )
    parser.add_argument(
        "--refine",
        nargs="*",
        default=["none", "ridge"],
        help="refinements of the study method ('none' is the study's method)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="parallel field evaluations (default: the library's)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--no-sse", action="store_true", help="backbone graph without helices and strands"
    )
    parser.add_argument(
        "--blur",
        type=float,
        default=0.0,
        metavar="A",
        help="low-pass each map by a Gaussian of this sigma (Å) first; resolution + 2 x A",
    )
    parser.add_argument(
        "--neural", action="store_true", help="also a graph from a neural field of EMD-3488"
    )
    parser.add_argument("--preset", default="fast", help="neural preset with --neural")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also the peak memory of the EMD-11007 graph (child process)",
    )
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data folder {args.data}", file=sys.stderr)
        return 2
    refines = list(dict.fromkeys(["none", *args.refine]))
    rows = []
    for entry in MAPS:
        if args.maps and entry[0] not in args.maps:
            continue
        runs = [(m, r) for m in args.methods for r in (refines if m == "study" else ["none"])]
        for method, refine in runs:
            row = run_map(
                entry,
                refine,
                threads=args.threads,
                data=args.data,
                method=method,
                with_baseline=(refine == "none" and method == "study" and not args.no_baseline),
                backbone={"sse": False} if (args.no_sse and method == "backbone") else None,
                blur_A=args.blur,
            )
            if row is not None:
                rows.append(row)
                print(
                    f"{row['map']} {method} refine={refine}: {row['nodes']} nodes, recall "
                    f"{row['recall']:.3f}, 1:1 precision {row['one_to_one_precision']:.3f} "
                    f"in {row['seconds_wall']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    neural = None
    if args.neural:
        neural = run_neural(args.data, args.preset) if "study" in args.methods else None
        if "backbone" in args.methods:
            backbone = run_neural_backbone(args.data, args.preset, args.out.parent)
            if backbone is not None:
                print(
                    f"\n### Backbone graph from a fitted .neural file (EMD-3488)\n\n"
                    f"{backbone['field']}: fit {backbone['fit_seconds']:.1f} s; load + graph "
                    f"{backbone['seconds_wall']:.1f} s wall / {backbone['seconds_cpu']:.1f} s "
                    f"CPU; {backbone['nodes']} nodes, recall {_f(backbone['recall'])}, 1:1 "
                    f"precision {_f(backbone['one_to_one_precision'])}, chain recall "
                    f"{_f(backbone['chain_recall'])}, edge precision "
                    f"{_f(backbone['edge_precision'])}"
                )
                neural = {**(neural or {}), "backbone": backbone}
    memory = run_memory(args.data) if args.memory else None
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "maxrss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maps": rows,
        "neural": neural,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from neural_em.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_tables(rows, neural)
    if memory:
        print(
            f"\nEMD-11007 spline graph: {memory['nodes']} nodes from "
            f"{memory['stats']['seeds']} seeds in {memory['seconds_wall']:.1f} s, peak memory "
            f"{memory['peak_rss_MB']:.0f} MB"
        )
    print(f"\nwritten {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
