"""``neural-em graph``: the density graph of a map or a ``.neural`` field."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from neural_em.atomic import check_output_path
from neural_em.cli.common import add_command, add_max_voxels, positive_float
from neural_em.errors import InputError

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = add_command(
        sub, "graph",
        "Density graph of a map or .neural field: nodes at local density maxima (seeds "
        "walked uphill, end points clustered), edges between nodes within the adjacency "
        "distance.",
        "neural-em graph emd_3488.mrc --resolution 3.2 -o emd_3488.graph.json "
        "--mmcif emd_3488.graph.cif")
    p.add_argument("input", type=Path, help="MRC/MAP/CCP4 map or .neural field file")
    p.add_argument("--field", choices=("spline", "neural", "learned"), default="spline",
                   help="field fitted to a map input (ignored for a .neural input)")
    p.add_argument("--resolution", type=positive_float, default=None, metavar="R",
                   help="map resolution in Å; sets the adjacency to 2 x R unless --adjacency")
    p.add_argument("--adjacency", type=positive_float, default=None, metavar="A",
                   help="largest edge length in Å; unset: 2 x resolution, or 4 without one")
    p.add_argument("--seed-threshold", type=float, default=None, metavar="T",
                   help="normalised seed density; unset: max(0.1, mean + 3 std) of the map")
    p.add_argument("--min-nodes", type=int, default=10, metavar="N",
                   help="drop connected components with fewer nodes")
    p.add_argument("--contour", type=float, default=None, metavar="C",
                   help="crop a map input to this raw contour level (+5 Å) before fitting")
    p.add_argument("--refine", choices=("none", "ridge"), default="none",
                   help="node refinement: 'ridge' drops detached satellites, nodes joined by "
                   "density to no other node beside a denser backbone-like node "
                   "(docs/graph.md)")
    p.add_argument("--preset", default="fast", help="neural fit preset (with --field neural)")
    p.add_argument("--device", action="append", default=None, metavar="DEV",
                   help="device for the neural field (repeatable); unset: cpu")
    p.add_argument("--max-steps", type=int, default=400,
                   help="cap on the uphill steps of a seed (those that hit it are reported)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="graph as node-link JSON (.graph.json)")
    p.add_argument("--mmcif", type=Path, default=None, help="also write mmCIF pseudo-atoms")
    p.add_argument("--graphml", type=Path, default=None, help="also write GraphML")
    p.add_argument("--npz", type=Path, default=None, help="also write npz for graph learning")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_max_voxels(p)
    p.set_defaults(func=run)


def _is_field_file(path: Path) -> bool:
    if path.suffix == ".neural":
        return True
    from neural_em.fields.fileformat import sniff_format

    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return len(head) > 8 and head[8:9] == b"{" and sniff_format(head) is None


def run(args: argparse.Namespace) -> int:
    from neural_em.graph.density_graph import DensityGraph

    outputs = [p for p in (args.output, args.mmcif, args.graphml, args.npz) if p is not None]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError("output paths must differ")
    for out in outputs:
        check_output_path(out, overwrite=args.force)
    if not args.input.is_file():
        raise InputError("no such file", args.input)
    if args.min_nodes < 1:
        raise InputError(f"--min-nodes must be at least 1, got {args.min_nodes}")
    if args.max_steps < 1:
        raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
    adjacency = args.adjacency
    if adjacency is None:
        adjacency = 2.0 * args.resolution if args.resolution is not None else 4.0
    options = dict(seed_threshold=args.seed_threshold, adjacency_threshold=adjacency,
                   min_num_nodes=args.min_nodes, refine=args.refine,
                   resolution_A=args.resolution, max_steps=args.max_steps)
    devices = tuple(args.device) if args.device else ("cpu",)
    if _is_field_file(args.input):
        from neural_em.fields import load_field

        field = load_field(args.input)
        field.max_voxels = args.max_voxels  # bounds the seed grid too
        graph = DensityGraph.from_neural_density_map(
            field, devices=devices if field.kind == "neural" else None,
            source=str(args.input), **options)
    elif args.field == "learned":
        import time

        from neural_em.fields.learned import LearnedDensityMap

        t0 = time.perf_counter()
        field = LearnedDensityMap.from_voxel_map(args.input, args.contour,
                                                 max_voxels=args.max_voxels)
        field.max_voxels = args.max_voxels
        fit_s = time.perf_counter() - t0
        graph = DensityGraph.from_neural_density_map(field, devices=None,
                                                     source=str(args.input), **options)
        graph.timings["field"] = fit_s
    else:
        graph = DensityGraph.from_voxel_density_map(
            args.input, args.field, contour=args.contour, devices=devices,
            preset=args.preset, max_voxels=args.max_voxels, **options)
    graph.save(args.output, overwrite=args.force)
    if args.mmcif is not None:
        graph.save_as_mmcif(args.mmcif, overwrite=args.force)
    if args.graphml is not None:
        graph.save_as_graphml(args.graphml, overwrite=args.force)
    if args.npz is not None:
        graph.save_as_npz(args.npz, overwrite=args.force)
    t = graph.timings
    steps = ", ".join(f"{k} {t[k]:.2f}" for k in ("field", "seeding", "walking", "clustering",
                                                  "refine", "edges") if k in t)
    capped = graph.stats.get("capped", 0)
    print(f"{graph.map_id}: {len(graph)} nodes, {graph.graph.number_of_edges()} edges "
          f"from {graph.stats.get('seeds', 0)} seeds ({capped} hit the step cap) in "
          f"{t.get('total', 0.0):.2f} s ({steps} s) -> {args.output}")
    return 0
