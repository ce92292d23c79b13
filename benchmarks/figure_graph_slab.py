"""The picture of docs/graph.md: a slab of a map with both graph methods drawn on it.

A slab of ``--thickness`` Å across z through the middle of the map (maximum projection of the
normalised density, grey), the deposited model's C-alpha trace in the slab (black), the study
method's graph (left) and the backbone graph (right): nodes and the edges whose two nodes lie in
the slab.

    python benchmarks/figure_graph_slab.py                  # EMD-3488 -> docs/figures/graph_methods_slab.png
    python benchmarks/figure_graph_slab.py --map emd_6272/emd_6272_zone.mrc --model emd_6272/3j9s.pdb --resolution 2.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--map", default="emd_3488/emd_3488.mrc", help="map under --data")
    parser.add_argument("--model", default="emd_3488/5ni1.cif", help="model under --data")
    parser.add_argument("--resolution", type=float, default=3.2)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--thickness", type=float, default=8.0, help="slab thickness (Å)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "figures" / "graph_methods_slab.png"
    )
    args = parser.parse_args(argv)
    map_path, model_path = args.data / args.map, args.data / args.model
    for path in (map_path, model_path):
        if not path.is_file():
            print(f"{path} is absent (../shared/data not beside the repo?)", file=sys.stderr)
            return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neural_em.atomic import atomic_path
    from neural_em.fields.spline import SplineDensityMap
    from neural_em.graph.evaluate import consecutive_pairs, evaluate_graph
    from neural_em.graph.methods import build_graph
    from neural_em.models import read_model

    field = SplineDensityMap.from_voxel_map(map_path)
    model = read_model(model_path)
    graphs = {
        m: build_graph(field, method=m, resolution_A=args.resolution) for m in ("study", "backbone")
    }
    lo, hi = field.bounds
    z_mid = float(np.median(model.ca[:, 2]))
    z0, z1 = z_mid - args.thickness / 2, z_mid + args.thickness / 2
    iz = np.flatnonzero(
        (lo[2] + np.arange(field.shape_xyz[2]) * field.voxel_size[2] >= z0)
        & (lo[2] + np.arange(field.shape_xyz[2]) * field.voxel_size[2] <= z1)
    )
    slab = field.volume[iz].max(axis=0)  # (y, x)
    extent = (lo[0], hi[0], lo[1], hi[1])

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharex=True, sharey=True)
    in_slab = (model.ca[:, 2] >= z0) & (model.ca[:, 2] <= z1)
    for ax, (method, graph) in zip(axes, graphs.items(), strict=True):
        ax.imshow(
            slab,
            origin="lower",
            extent=extent,
            cmap="Greys",
            alpha=0.55,
            vmin=0,
            vmax=float(np.percentile(slab, 99.5)),
        )
        for a, b in consecutive_pairs(model):
            if in_slab[a] and in_slab[b]:
                ax.plot(model.ca[[a, b], 0], model.ca[[a, b], 1], color="black", lw=1.2, zorder=2)
        pos = graph.positions
        keep = (pos[:, 2] >= z0) & (pos[:, 2] <= z1)
        for a, b in graph.edge_index.T:
            if keep[a] and keep[b]:
                ax.plot(
                    pos[[a, b], 0], pos[[a, b], 1], color="#d62728", lw=0.7, alpha=0.7, zorder=3
                )
        ax.scatter(pos[keep, 0], pos[keep, 1], s=9, color="#d62728", zorder=4)
        r = evaluate_graph(graph, model)
        ax.set_title(
            f"{method}: {r['nodes']} nodes ({r['nodes_per_ca']:.2f} per C-α), recall "
            f"{r['recall']:.2f}, 1:1 precision {r['one_to_one_precision']:.2f},\n"
            f"chain recall {r['chain_recall']:.2f}, edge precision "
            f"{r['edge_precision']:.2f}, mean degree {r['mean_degree']:.1f}",
            fontsize=9,
        )
        ax.set(
            xlabel="x (Å)",
            ylabel="y (Å)",
            xlim=(model.ca[:, 0].min() - 6, model.ca[:, 0].max() + 6),
            ylim=(model.ca[:, 1].min() - 6, model.ca[:, 1].max() + 6),
        )
    fig.suptitle(
        f"{map_path.name}: {args.thickness:g} Å slab at z = {z_mid:.1f} Å; black: "
        "model C-α trace; red: graph nodes and edges in the slab",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
