"""``neural-em graph``: the density graph of a map or a ``.neural`` field."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from neural_em.atomic import check_output_path
from neural_em.cli.common import add_command, add_max_voxels, positive_float
from neural_em.errors import InputError
from neural_em.fields.kinds import FIELD_HELP, FIELD_KINDS

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add ``neural-em graph`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "graph",
        "Density graph of a map or .neural field. --method study (default): nodes at local "
        "density maxima (seeds walked uphill, end points clustered), edges between nodes "
        "within the adjacency distance. --method backbone: about one node per residue on the "
        "backbone's density ridges, edges along the chain (docs/graph.md).",
        "neural-em graph emd_3488.mrc --method backbone --resolution 3.2 "
        "-o emd_3488.graph.json --mmcif emd_3488.graph.cif",
    )
    p.add_argument("input", type=Path, help="MRC/MAP/CCP4 map or .neural field file")
    p.add_argument(
        "--method",
        choices=("study", "backbone"),
        default="study",
        help="graph method: the study's density graph, or the backbone graph",
    )
    p.add_argument(
        "--field",
        choices=tuple(FIELD_KINDS),
        default="spline",
        help=f"field kind fitted to a map input, one of {FIELD_HELP} (ignored for a .neural input)",
    )
    p.add_argument(
        "--resolution",
        type=positive_float,
        default=None,
        metavar="R",
        help="map resolution in Å; sets the adjacency to 2 x R unless --adjacency",
    )
    p.add_argument(
        "--adjacency",
        type=positive_float,
        default=None,
        metavar="A",
        help="study method: largest edge length in Å; unset: 2 x resolution, or 4 without one",
    )
    p.add_argument(
        "--seed-threshold",
        type=float,
        default=None,
        metavar="T",
        help="normalised seed density; unset: max(0.1, mean + 3 std) of the map",
    )
    p.add_argument(
        "--min-nodes",
        type=int,
        default=None,
        metavar="N",
        help="drop connected components with fewer nodes; unset: 10 (study), 1 (backbone)",
    )
    p.add_argument(
        "--node-spacing",
        type=positive_float,
        default=None,
        metavar="A",
        help="backbone method: preferred chord in Å from one node to the next along a "
        "straight ridge (default 3.6; 3.0 where the ridge winds through a helix)",
    )
    p.add_argument(
        "--prune",
        type=positive_float,
        default=None,
        metavar="A",
        help="backbone method: ridge branches shorter than this (Å) are side "
        "chains and pruned (default 3.0; weak ones up to 5.0)",
    )
    p.add_argument(
        "--no-sse",
        action="store_true",
        help="backbone method: do not look for helices and strands (one node per residue "
        "along helix axes, node label sse); every node is labelled coil",
    )
    p.add_argument(
        "--contour",
        type=float,
        default=None,
        metavar="C",
        help="crop a map input to this raw contour level (+5 Å) before fitting",
    )
    p.add_argument(
        "--refine",
        choices=("none", "ridge"),
        default=None,
        help="node refinement: 'ridge' drops detached satellites, nodes joined by "
        "density to no other node beside a denser backbone-like node "
        "(docs/graph.md); study method only",
    )
    p.add_argument("--preset", default="fast", help="neural fit preset (with --field neural)")
    p.add_argument(
        "--device",
        action="append",
        default=None,
        metavar="DEV",
        help="device for the neural field (repeatable); unset: cpu",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=400,
        help="study method: cap on the uphill steps of a seed (those that hit it are reported)",
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="graph as node-link JSON (.graph.json)"
    )
    p.add_argument("--mmcif", type=Path, default=None, help="also write mmCIF pseudo-atoms")
    p.add_argument("--graphml", type=Path, default=None, help="also write GraphML")
    p.add_argument("--npz", type=Path, default=None, help="also write npz for graph learning")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_max_voxels(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the graph of a map or field file and write its files."""
    from neural_em.fields.fileformat import is_field_file
    from neural_em.graph.methods import build_graph, graph_from_map

    outputs = [p for p in (args.output, args.mmcif, args.graphml, args.npz) if p is not None]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError("output paths must differ")
    for out in outputs:
        check_output_path(out, overwrite=args.force)
    if not args.input.is_file():
        raise InputError("no such file", args.input)
    if args.min_nodes is not None and args.min_nodes < 1:
        raise InputError(f"--min-nodes must be at least 1, got {args.min_nodes}")
    if args.max_steps < 1:
        raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
    backbone = {
        k: v
        for k, v in (
            ("node_spacing_A", args.node_spacing),
            ("prune_A", args.prune),
            ("sse", False if args.no_sse else None),
        )
        if v is not None
    }
    if args.method == "backbone":
        if args.adjacency is not None or args.refine is not None:
            raise InputError("--adjacency and --refine apply to --method study only")
    elif backbone:
        raise InputError("--node-spacing, --prune and --no-sse apply to --method backbone only")
    options: dict[str, Any] = dict(
        method=args.method,
        seed_threshold=args.seed_threshold,
        min_num_nodes=args.min_nodes,
        resolution_A=args.resolution,
    )
    if args.method == "backbone":
        options["backbone"] = backbone
    else:
        options.update(adjacency_A=args.adjacency, refine=args.refine, max_steps=args.max_steps)
    devices = tuple(args.device) if args.device else ("cpu",)
    if is_field_file(args.input):
        from neural_em.fields import load_field

        field = load_field(args.input)
        field.max_voxels = args.max_voxels  # bounds the seed grid too
        graph = build_graph(
            field,
            devices=devices if field.kind == "neural" else None,
            source=str(args.input),
            **options,
        )
    else:
        graph = graph_from_map(
            args.input,
            field=args.field,
            contour=args.contour,
            devices=devices,
            preset=args.preset,
            max_voxels=args.max_voxels,
            **options,
        )
    graph.save(args.output, overwrite=args.force)
    if args.mmcif is not None:
        graph.save_as_mmcif(args.mmcif, overwrite=args.force)
    if args.graphml is not None:
        graph.save_as_graphml(args.graphml, overwrite=args.force)
    if args.npz is not None:
        graph.save_as_npz(args.npz, overwrite=args.force)
    t = graph.timings
    steps = ", ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "total")
    if args.method == "backbone":
        origin = f"from {graph.stats.get('ridge_points', 0)} ridge points"
    else:
        origin = (
            f"from {graph.stats.get('seeds', 0)} seeds ({graph.stats.get('capped', 0)} "
            "hit the step cap)"
        )
    print(
        f"{graph.map_id}: {args.method} graph, {len(graph)} nodes, "
        f"{graph.graph.number_of_edges()} edges {origin} in {t.get('total', 0.0):.2f} s "
        f"({steps} s) -> {args.output}"
    )
    return 0
