"""The helix picture of docs/graph.md: helices found in a map, and one of them in profile.

(a) The whole map seen down z (maximum projection, grey), the model's C-alphas by their P-SEA
class (helix blue, strand green, coil grey) and the helix axes found in the map (red: strong,
placed on; orange: weaker, labels only). (b, c) The longest axis whose nodes were replaced,
seen from the side: the density projected over a 10 Å slab around the axis plane, the model's
C-alpha trace, and the backbone graph without (b) and with (c) secondary structure, nodes
coloured by their label.

    python benchmarks/figure_helix.py       # EMD-5778 -> docs/figures/graph_helix.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
COLOURS = {"helix": "#1f77b4", "strand": "#2ca02c", "coil": "#7f7f7f"}


def _frame(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors: ``u`` along ``direction``, ``v`` normal to it and to z where it can."""
    u = direction / np.linalg.norm(direction)
    v = np.cross(u, [0.0, 0.0, 1.0])
    if np.linalg.norm(v) < 0.3:
        v = np.cross(u, [1.0, 0.0, 0.0])
    return u, v / np.linalg.norm(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--map", default="emd_5778/emd_5778_chainA.mrc", help="map under --data")
    parser.add_argument("--model", default="emd_5778/3j5p.pdb", help="model under --data")
    parser.add_argument("--resolution", type=float, default=3.28)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "graph_helix.png")
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
    from neural_em.graph.sse import axis_coverage, helix_axes
    from neural_em.models import ca_secondary_structure, read_model

    field = SplineDensityMap.from_voxel_map(map_path)
    model = read_model(model_path)
    truth = ca_secondary_structure(model)
    plain = build_graph(
        field, method="backbone", resolution_A=args.resolution, backbone={"sse": False}
    )
    graph = build_graph(field, method="backbone", resolution_A=args.resolution)
    axes = helix_axes(field)
    placed = [a for a in axes if a.score >= 0.6 and axis_coverage(plain.positions, a) < 0.85]
    focus = max(placed or axes, key=lambda a: a.length_A)

    fig, panels = plt.subplots(1, 3, figsize=(16, 5.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    lo, hi = field.bounds
    ax = panels[0]
    ax.imshow(
        field.volume.max(axis=0),
        origin="lower",
        extent=(lo[0], hi[0], lo[1], hi[1]),
        cmap="Greys",
        alpha=0.5,
    )
    for label, colour in COLOURS.items():
        sel = truth == label
        ax.scatter(model.ca[sel, 0], model.ca[sel, 1], s=5, color=colour, label=f"model {label}")
    for a in axes:
        colour = "#d62728" if a.score >= 0.6 else "#ff7f0e"
        ends = a.ends()
        ax.plot(ends[:, 0], ends[:, 1], color=colour, lw=3, alpha=0.9, solid_capstyle="round")
    ax.set(
        xlabel="x (Å)", ylabel="y (Å)", title=f"(a) {len(axes)} helix axes found in {map_path.name}"
    )
    ax.legend(fontsize=7, loc="lower right")

    u, v = _frame(focus.direction)
    w = np.cross(u, v)
    centre = focus.points.mean(axis=0)
    half = focus.length_A / 2 + 8.0
    s = np.arange(-half, half, 0.5)
    t = np.arange(-12.0, 12.0, 0.5)
    depth = np.arange(-5.0, 5.01, 0.5)
    grid = (
        centre
        + s[None, :, None, None] * u
        + t[:, None, None, None] * v
        + depth[None, None, :, None] * w
    )
    image = (
        np.nan_to_num(field.get_densities(grid.reshape(-1, 3))).reshape(grid.shape[:3]).max(axis=2)
    )

    def project(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rel = p - centre
        return rel @ u, rel @ v, np.abs(rel @ w) <= 5.0

    near_ca = np.isin(
        np.arange(model.n_ca), np.flatnonzero(np.linalg.norm(model.ca - centre, axis=1) < half + 6)
    )
    for ax, g, name in (
        (panels[1], plain, "(b) without helices"),
        (panels[2], graph, "(c) with helices"),
    ):
        ax.imshow(
            image, origin="lower", extent=(s[0], s[-1], t[0], t[-1]), cmap="Greys", alpha=0.55
        )
        cu, cv, cin = project(model.ca)
        for a, b in consecutive_pairs(model):
            if cin[a] and cin[b] and near_ca[a] and near_ca[b]:
                ax.plot(cu[[a, b]], cv[[a, b]], color="black", lw=1.0, zorder=2)
        pu, pv, pin = project(g.positions)
        for a, b in g.edge_index.T:
            if pin[a] and pin[b]:
                ax.plot(pu[[a, b]], pv[[a, b]], color="#d62728", lw=0.8, alpha=0.7, zorder=3)
        labels = np.array([d.get("sse", "coil") for _, d in g.graph.nodes(data=True)])
        for label, colour in COLOURS.items():
            sel = pin & (labels == label)
            ax.scatter(pu[sel], pv[sel], s=22, color=colour, edgecolor="white", lw=0.4, zorder=4)
        r = evaluate_graph(g, model)
        ax.set(
            xlim=(s[0], s[-1]),
            ylim=(t[0], t[-1]),
            xlabel="along the axis (Å)",
            ylabel="across (Å)",
            title=f"{name}: map helix recall {r['recall_helix']:.2f}, "
            f"{r['nodes_per_ca']:.2f} nodes per C-α",
        )
        ax.title.set_fontsize(9)
    fig.suptitle(
        f"{map_path.name}: black, model C-α trace; nodes coloured by label "
        "(blue helix, green strand, grey coil); red lines, graph edges",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
