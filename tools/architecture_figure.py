"""Draw docs/figures/architecture.png: the path of one map through the pipeline, by layer.

    python tools/architecture_figure.py                 # writes docs/figures/architecture.png
    python tools/architecture_figure.py -o /tmp/a.png   # elsewhere

Each box is one step: the Snakemake rule (bold), the program it runs (a rule script in
scripts/ or a ``neural-em`` sub-command) and the library function that does the work. Colours
are the library's layers (docs/architecture.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

LAYERS = {
    "map I/O and structures": "#dbe9f6",
    "fields": "#fde2c8",
    "graphs and evaluation": "#d8f0d2",
    "pipeline": "#e8defa",
}

#: (column, row, rule(s), program, library, layer)
STEPS = [
    (
        0,
        0,
        "download_metadata / _map\n/ _model / _fasta",
        "scripts/download.py",
        "pipeline.download.fetch\n+ check_mrc_header (mrcread)",
        "pipeline",
    ),
    (
        0,
        1,
        "entry_info",
        "scripts/entry_info.py",
        "pipeline.archive.parse_emdb_metadata\nmrcread.read_map_header",
        "pipeline",
    ),
    (
        1,
        0,
        "fit_neural",
        "neural-em fit\n(in scripts/with_gpu_slot.py)",
        "NeuralDensityMap.from_voxel_map\nfields.training.fit_regions",
        "fields",
    ),
    (
        1,
        1,
        "fit_spline",
        "neural-em fit --field spline\n(fit_field: learned, ...)",
        "fields.fit_field",
        "fields",
    ),
    (
        1,
        2,
        "interpolation",
        "scripts/interpolation.py",
        "pipeline.interpolation\n.interpolation_experiment",
        "pipeline",
    ),
    (
        2,
        0,
        "graph",
        "neural-em graph  (study, backbone)",
        "graph.build_graph\ngraph.export, graph.mmcif",
        "graphs and evaluation",
    ),
    (
        2,
        1,
        "evaluate_graph",
        "neural-em evaluate -o",
        "graph.evaluate.evaluate_graph\nmodels.read_model",
        "graphs and evaluation",
    ),
    (
        3,
        0,
        "collect",
        "scripts/collect.py",
        "pipeline.collect.collect_metrics\npipeline.tables.write_tables",
        "pipeline",
    ),
    (3, 1, "figures", "scripts/figures.py", "pipeline.figures.make_figures", "pipeline"),
    (
        3,
        2,
        "table_html, summary",
        "scripts/table_html.py\nscripts/summary.py",
        "pipeline.summary.write_summary_html",
        "pipeline",
    ),
]
ARROWS = [(0, 1), (1, 2), (1, 3), (0, 4), (2, 5), (3, 5), (5, 6), (6, 7), (4, 7), (7, 8), (8, 9)]
FILES = {  # what flows along an arrow (start step, end step) -> label
    (1, 2): "map, contour",
    (0, 4): "model",
    (2, 5): ".neural",
    (5, 6): "graph.json",
    (6, 7): "metrics.json\nper graph",
    (7, 8): "results/metrics.json",
}

W, H, DX, DY = 3.1, 1.55, 3.55, 2.0


def centre(step: tuple) -> tuple[float, float]:
    col, row = step[0], step[1]
    return col * DX + W / 2, -row * DY + H / 2


def draw(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(14.5, 7.2))
    for col, row, rule, program, library, layer in STEPS:
        x, y = col * DX, -row * DY
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                W,
                H,
                boxstyle="round,pad=0.04,rounding_size=0.12",
                fc=LAYERS[layer],
                ec="#555555",
                lw=1.0,
            )
        )
        ax.text(
            x + W / 2, y + H - 0.12, rule, ha="center", va="top", fontsize=9.5, fontweight="bold"
        )
        n_rule = rule.count("\n") + 1
        ax.text(
            x + W / 2,
            y + H - 0.18 - 0.2 * n_rule,
            program,
            ha="center",
            va="top",
            fontsize=8,
            family="monospace",
            color="#333333",
        )
        ax.text(
            x + W / 2,
            y + 0.1,
            library,
            ha="center",
            va="bottom",
            fontsize=8,
            style="italic",
            color="#1a1a66",
        )
    for a, b in ARROWS:
        (x0, y0), (x1, y1) = centre(STEPS[a]), centre(STEPS[b])
        if STEPS[a][0] == STEPS[b][0]:  # same column: bottom to top
            start, end = (x0, y0 - H / 2), (x1, y1 + H / 2)
        else:
            start, end = (x0 + W / 2, y0), (x1 - W / 2, y1)
        ax.add_patch(
            FancyArrowPatch(
                start,
                end,
                arrowstyle="-|>",
                mutation_scale=13,
                color="#444444",
                lw=1.1,
                shrinkA=3,
                shrinkB=3,
            )
        )
        if (a, b) in FILES:
            ax.text(
                (start[0] + end[0]) / 2 + 0.05,
                (start[1] + end[1]) / 2 + 0.08,
                FILES[(a, b)],
                fontsize=7.5,
                color="#444444",
                ha="center",
                va="bottom",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5},
            )
    for i, (name, colour) in enumerate(LAYERS.items()):
        ax.add_patch(
            FancyBboxPatch(
                (i * DX, -2 * DY - 1.0),
                0.35,
                0.3,
                boxstyle="round,pad=0.02",
                fc=colour,
                ec="#555555",
            )
        )
        ax.text(i * DX + 0.45, -2 * DY - 0.85, f"layer: {name}", va="center", fontsize=8.5)
    ax.text(
        0,
        H + 0.35,
        "One map through the pipeline: rule (bold), program, library function (italic)",
        fontsize=11,
        fontweight="bold",
    )
    ax.set_xlim(-0.2, 3 * DX + W + 0.2)
    ax.set_ylim(-2 * DY - 1.2, H + 0.7)
    ax.set_aspect("equal")
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-o", "--output", type=Path, default=REPO / "docs" / "figures" / "architecture.png"
    )
    args = parser.parse_args(argv)
    print(draw(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
