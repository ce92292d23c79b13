"""``neural-em evaluate``: metrics of a density graph against an atomic model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from neural_em.cli.common import add_command, json_text, positive_float, print_json
from neural_em.errors import InputError

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add ``neural-em evaluate`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "evaluate",
        "C-alpha recall, one-to-one precision, F1, coverage, precision, RMSD, chain recall, "
        "edge precision and mean degree of a density graph against an atomic model (and the "
        "node metrics of the local-maximum baseline of its map).",
        "neural-em evaluate emd_3488.graph.json --model 5ni1.cif -o emd_3488.metrics.json",
    )
    p.add_argument("graph", type=Path, help="graph JSON (or .npz) written by 'neural-em graph'")
    p.add_argument("--model", type=Path, required=True, help="PDB or mmCIF model")
    p.add_argument(
        "--resolution",
        type=positive_float,
        default=None,
        metavar="R",
        help="map resolution in Å; unset: the graph's. Below 2 Å atom-level metrics "
        "(1 Å, heavy atoms) are added",
    )
    p.add_argument("--cutoff", type=positive_float, default=3.0, help="C-alpha match distance in Å")
    p.add_argument(
        "--map",
        type=Path,
        default=None,
        help="map (or .neural) for the local-maximum baseline; unset: the graph's "
        "source file, where it exists",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="write the JSON object to this file (atomically) instead of printing a table",
    )
    p.add_argument("--force", action="store_true", help="overwrite the output")
    p.set_defaults(func=run)


def _baseline_map(path: Path, contour: Any) -> Any:
    from neural_em.fields.fileformat import is_field_file

    if is_field_file(path):
        from neural_em.fields import load_field

        return load_field(path).to_voxel_density_map()
    from neural_em.voxelmap import load_normalised

    return load_normalised(path, contour=contour if isinstance(contour, (int, float)) else None)


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    """Evaluate the graph; print a table, print JSON (``--json``) or write it (``-o``)."""
    from neural_em.atomic import atomic_write_text, check_output_path
    from neural_em.graph.density_graph import DensityGraph
    from neural_em.graph.evaluate import evaluate_graph
    from neural_em.models import SSE_CLASSES, read_model

    if args.output is not None:
        check_output_path(args.output, overwrite=args.force)
    graph = DensityGraph.load(args.graph)
    model = read_model(args.model)
    baseline_map = None
    if not args.no_baseline:
        source = args.map
        if source is None:
            recorded = graph.graph.graph.get("source")
            if isinstance(recorded, str) and recorded and Path(recorded).is_file():
                source = Path(recorded)
        if source is not None:
            if not source.is_file():
                raise InputError("no such map file", source)
            baseline_map = _baseline_map(source, graph.graph.graph.get("contour"))
        else:
            logger.warning("no map for the baseline (pass --map)")
    result = evaluate_graph(
        graph,
        model,
        resolution_A=args.resolution,
        baseline_map=baseline_map,
        ca_cutoff_A=args.cutoff,
    )
    result["graph"] = str(args.graph)
    if args.output is not None:
        atomic_write_text(args.output, json_text(result), overwrite=args.force)
        return 0
    if args.json:
        print_json(result)
        return 0
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    rows = [("graph", result)]
    if "baseline" in result:
        rows.append(("local maxima", result["baseline"]))
    print(
        f"{result['map_id'] or args.graph}: {result['ca']} C-alpha in {args.model}, "
        f"cutoff {args.cutoff:g} Å"
    )
    print(
        f"{'':14s} {'nodes':>7s} {'recall':>7s} {'1:1 prec':>8s} {'F1':>6s} "
        f"{'coverage':>8s} {'precision':>9s} {'rmsd':>6s} {'nodes/CA':>8s}"
    )
    for name, r in rows:
        print(
            f"{name:14s} {r['nodes']:7d} {_fmt(r['recall']):>7s} "
            f"{_fmt(r.get('one_to_one_precision')):>8s} {_fmt(r.get('f1')):>6s} "
            f"{_fmt(r['coverage']):>8s} {_fmt(r['precision']):>9s} {_fmt(r['rmsd'], 2):>6s} "
            f"{_fmt(r['nodes_per_ca'], 2):>8s}"
        )
    print(
        f"edges {result['edges']} ({result.get('method', 'study')} method): chain recall "
        f"{_fmt(result.get('chain_recall'))}, edge precision "
        f"{_fmt(result.get('edge_precision'))}, mean degree "
        f"{_fmt(result.get('mean_degree'), 2)}"
    )
    print(
        "by the model's secondary structure (P-SEA): C-alpha recall "
        + ", ".join(
            f"{label} {_fmt(result.get(f'recall_{label}'))} (of {result.get(f'ca_{label}', 0)})"
            for label in SSE_CLASSES
        )
    )
    if result.get("label_precision_helix") is not None or result.get("label_recall_helix"):
        print(
            "node labels (sse) precision / recall: "
            + ", ".join(
                f"{label} {_fmt(result.get(f'label_precision_{label}'))} / "
                f"{_fmt(result.get(f'label_recall_{label}'))}"
                for label in SSE_CLASSES
            )
        )
    for name, r in rows:
        if "atoms" in r:
            a = r["atoms"]
            print(
                f"{name} atoms (heavy, {a['cutoff_A']:g} Å): {a['reference']} atoms, recall "
                f"{_fmt(a['recall'])}, coverage {_fmt(a['coverage'])}, precision "
                f"{_fmt(a['precision'])}, rmsd {_fmt(a['rmsd'], 2)}"
            )
    return 0
