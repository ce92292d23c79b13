"""The study's figures from the pipeline's ``metrics.json``, ours beside the study's results.

:func:`make_figures` draws, as PNG (for reading) and SVG (for print):

* ``training_time``: neural-map training time against voxel count, per map (total) and per
  region;
* ``file_size``: ``.neural`` file size against the MRC file of the same box;
* ``graph_metrics``: C-alpha recall, precision, RMSD and nodes per C-alpha against resolution,
  for the graphs of the neural and the spline field (and DeepTracer where it ran);
* ``graph_methods``: the graph methods (study, backbone) side by side per map and field;
* ``interpolation_error``: mean absolute and maximum interpolation error against resolution,
  per method.

Where ``reference_dir`` holds the study's published results (``paper_graph_evaluation.json``,
``paper_interpolation_evaluation.csv``), they are drawn in grey beside ours.
Shared colours and helpers: :mod:`neural_em.pipeline.plotting`; the HTML summary page:
:mod:`neural_em.pipeline.summary`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.pipeline.labels import place_labels
from neural_em.pipeline.plotting import (
    COLOURS,
    METHOD_LABELS,
    device_label,
    get_path,
    legend,
    log_axes,
    note_empty,
    number,
    pairs,
    pyplot,
    save_figure,
    scatter_run,
    scatter_study,
)

logger = logging.getLogger(__name__)

FIGURES = ("training_time", "file_size", "graph_metrics", "graph_methods", "interpolation_error")


# ====================================================================== inputs
def load_reference(reference_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The study's published per-map results, or {} where the folder or files are absent."""
    if reference_dir is None:
        return {}
    ref = Path(reference_dir)
    out: dict[str, Any] = {}
    graph = ref / "paper_graph_evaluation.json"
    if graph.is_file():
        out["graph"] = json.loads(graph.read_text(encoding="utf-8"))
    interp = ref / "paper_interpolation_evaluation.csv"
    if interp.is_file():
        with open(interp, newline="", encoding="utf-8") as handle:
            out["interpolation"] = list(csv.DictReader(handle))
    if not out:
        logger.info("no study results under %s: figures show this run only", ref)
    return out


# Complexity over 15: one figure: one branch per optional panel and reference series.
def fig_training_time(  # noqa: C901
    entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any], plt: Any
) -> Any:
    """Training time against map size: this run's entries beside the study's."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    label = f"this run ({device_label(entries)})" if entries else "this run"
    study = ref.get("graph") or []
    # total per map
    if study:
        xs = [number(r.get("Voxel count")) for r in study]
        ys = [number(r.get("Total training time")) for r in study]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x and y]
        scatter_study(ax1, pts, f"study (paper preset, GPU; {len(pts)} maps)")
    xs, ys = pairs(entries, ("neural", "crop_voxels"), ("neural", "total_training_s"))
    if xs:
        scatter_run(ax1, xs, ys, label, colour=COLOURS["neural"], marker="D", size=60)
    log_axes(ax1, x=True, y=True)
    ax1.set(
        xlabel="voxels fitted (count)",
        ylabel="total training time (s)",
        title="Training time per map",
    )
    named = [
        (
            e["key"],
            number(get_path(e, "neural", "crop_voxels")),
            number(get_path(e, "neural", "total_training_s")),
        )
        for e in entries
    ]
    named = [(k, x, y) for k, x, y in named if x and y]
    if not xs and not study:
        note_empty(ax1)
    legend(ax1, below=True)
    # per region
    if study:
        pts = []
        for r in study:
            n, v, t = (
                number(r.get("Neural region count")),
                number(r.get("Voxel count")),
                number(r.get("Average region training time")),
            )
            if n and v and t:
                pts.append((v / n, t))
        scatter_study(ax2, pts, "study: map mean (voxels / regions)")
    rx, ry = [], []
    for e in entries:
        for r in get_path(e, "neural", "per_region") or []:
            if r.get("skipped"):
                continue
            v, t = number(r.get("voxels")), number(r.get("seconds"))
            if v and t:
                rx.append(v)
                ry.append(t)
    if rx:
        ax2.scatter(
            rx,
            ry,
            s=22,
            color=COLOURS["neural"],
            alpha=0.75,
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
            label=f"this run: wall time until each region stopped ({len(rx)}, trained together)",
        )
        mx, my = [], []
        for e in entries:
            per = [
                r
                for r in get_path(e, "neural", "per_region") or []
                if not r.get("skipped") and number(r.get("voxels"))
            ]
            mean_t = number(get_path(e, "neural", "mean_region_training_s"))
            if per and mean_t:
                mx.append(sum(r["voxels"] for r in per) / len(per))
                my.append(mean_t)
        if mx:
            ax2.scatter(
                mx,
                my,
                s=70,
                marker="D",
                color="white",
                edgecolor=COLOURS["neural"],
                linewidth=2,
                zorder=4,
                label="this run: total time / regions",
            )
    elif entries:
        mx, my = pairs(entries, ("neural", "crop_voxels"), ("neural", "mean_region_training_s"))
        if mx:
            scatter_run(
                ax2, mx, my, "this run: map mean", colour=COLOURS["neural"], marker="D", size=60
            )
    log_axes(ax2, x=True, y=True)
    ax2.set(
        xlabel="voxels in the region (count)",
        ylabel="training time (s)",
        title="Training time per region",
    )
    if not rx and not study:
        note_empty(ax2)
    legend(ax2, below=True)
    fig.suptitle("Neural map training time against map size", fontsize=12)
    fig.tight_layout()
    # labels last: their boxes are measured on the laid-out axes
    place_labels(ax1, [(x, y) for _, x, y in named], [k for k, _, _ in named])
    return fig


def fig_file_size(entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any], plt: Any) -> Any:
    """File sizes (``.neural`` against MRC) of this run's entries beside the study's."""
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    mb = 1e-6
    allv = []
    study = ref.get("graph") or []
    if study:
        pts = [
            (number(r.get("Native save size")), number(r.get("Neural save size"))) for r in study
        ]
        pts = [(x * mb, y * mb) for x, y in pts if x and y]
        scatter_study(ax, pts, "study: neural (paper preset) vs whole map")
        allv += [v for p in pts for v in p]
    xs, ys = pairs(entries, ("neural", "crop_mrc_bytes"), ("neural", "bytes"), mb)
    xs = [x * mb for x in xs]
    if xs:
        scatter_run(
            ax,
            xs,
            ys,
            f"this run: neural ({device_label(entries)}) vs same box",
            colour=COLOURS["neural"],
            marker="D",
        )
    sx, sy = pairs(entries, ("neural", "crop_mrc_bytes"), ("spline", "bytes"), mb)
    sx = [x * mb for x in sx]
    if sx:
        scatter_run(
            ax,
            sx,
            sy,
            "this run: spline field vs same box",
            colour=COLOURS["spline"],
            marker="s",
            size=50,
        )
    allv += xs + ys + sx + sy
    if allv:
        lo, hi = min(allv) / 2, max(allv) * 2
        for factor, style, text in (
            (1.0, "-", "same size"),
            (0.5, ":", "half"),
            (2.0, "--", "twice"),
        ):
            ax.plot(
                [lo, hi],
                [lo * factor, hi * factor],
                style,
                color="black",
                lw=0.8,
                alpha=0.6,
                label=f"y = {factor:g} x ({text})",
            )
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set(xscale="log", yscale="log")
    else:
        note_empty(ax)
    ax.set(
        xlabel="MRC file size, float32 (MB)",
        ylabel="field file size (MB)",
        title="Neural map file size against the MRC map",
    )
    legend(ax)
    fig.tight_layout()
    return fig


def fig_graph_metrics(
    entries: Sequence[Mapping[str, Any]],
    ref: Mapping[str, Any],
    plt: Any,
    fields: Sequence[str] = ("neural", "spline"),
) -> Any:
    """Graph metrics per field and resolution: this run's entries beside the study's."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (
            "recall",
            100.0,
            "% C-α with a node (≤ 3 Å, one-to-one)",
            "C-α recall",
            "% C-a with Node",
            "DeepTracer % matching",
        ),
        ("precision", 100.0, "% nodes with a C-α (≤ 3 Å)", "Precision", "% Node with C-a", None),
        ("rmsd", 1.0, "RMSD of matched pairs (Å)", "RMSD", "Graph RMSD", "DeepTracer RMSD"),
        ("nodes_per_ca", 1.0, "nodes per C-α atom", "Nodes per C-α", None, None),
    ]
    study = ref.get("graph") or []
    for ax, (key, scale, ylabel, title, ref_col, dt_col) in zip(axes.ravel(), panels, strict=True):
        drawn = False
        if study:
            if ref_col:
                xs = [number(r.get("resolution")) for r in study]
                ys = [number(r.get(ref_col)) for r in study]
            else:  # nodes per C-alpha from counts
                xs = [number(r.get("resolution")) for r in study]
                ys = [
                    (number(r.get("Num nodes")) or math.nan)
                    / (number(r.get("Num C-a")) or math.nan)
                    for r in study
                ]
            pts = [
                (x, y)
                for x, y in zip(xs, ys, strict=True)
                if x is not None and y is not None and math.isfinite(y)
            ]
            if pts:
                scatter_study(ax, pts, f"study: neural graph ({len(pts)} maps)")
                drawn = True
            if dt_col:
                pts = [(number(r.get("resolution")), number(r.get(dt_col))) for r in study]
                pts = [p for p in pts if p[0] is not None and p[1] is not None]
                if pts:
                    scatter_study(
                        ax, pts, "study: DeepTracer", s=12, marker="^", color=COLOURS["study_dt"]
                    )
        for field, marker in (("neural", "D"), ("spline", "s")):
            if field not in fields:
                continue
            xs, ys = pairs(entries, ("resolution",), ("graph", field, key), scale)
            if xs:
                scatter_run(
                    ax,
                    xs,
                    ys,
                    f"this run: {field} field graph",
                    colour=COLOURS[field],
                    marker=marker,
                )
                drawn = True
        xs, ys = pairs(entries, ("resolution",), ("deeptracer", key), scale)
        if xs:
            scatter_run(
                ax,
                xs,
                ys,
                "this run: DeepTracer",
                colour=COLOURS["deeptracer"],
                marker="^",
                size=60,
            )
        if not drawn:
            note_empty(ax)
        if key in ("recall", "precision"):
            ax.set_ylim(0, 105)
        elif key == "nodes_per_ca":
            log_axes(ax, y=True)
        ax.set(xlabel="map resolution (Å)", ylabel=ylabel, title=title)
        legend(ax)
    fig.suptitle("Density graphs against the deposited model's C-α atoms", fontsize=12)
    fig.tight_layout()
    return fig


def fig_graph_methods(
    entries: Sequence[Mapping[str, Any]],
    plt: Any,
    methods: Sequence[str] = ("study", "backbone"),
    fields: Sequence[str] = ("neural", "spline"),
) -> Any:
    """The graph methods per map: recall, one-to-one precision, F1, chain recall and edge
    precision as bars (one group per map and field, one bar per method), nodes per C-alpha."""
    from neural_em.pipeline.collect import GRAPH_RECORD

    panels = [
        ("recall", "C-α recall"),
        ("one_to_one_precision", "one-to-one precision"),
        ("f1", "F1"),
        ("chain_recall", "chain recall"),
        ("edge_precision", "edge precision"),
        ("nodes_per_ca", "nodes per C-α"),
    ]
    groups = [
        (e, f)
        for e in entries
        for f in fields
        if any(
            number(get_path(e, GRAPH_RECORD.get(m, ""), f, "recall")) is not None for m in methods
        )
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    width = 0.8 / max(1, len(methods))
    for ax, (key, title) in zip(axes.ravel(), panels, strict=True):
        drawn = False
        for k, method in enumerate(methods):
            xs, ys = [], []
            for g, (e, f) in enumerate(groups):
                y = number(get_path(e, GRAPH_RECORD.get(method, ""), f, key))
                if y is not None:
                    xs.append(g + (k - (len(methods) - 1) / 2) * width)
                    ys.append(y)
            if xs:
                ax.bar(
                    xs,
                    ys,
                    width=width,
                    label=method,
                    edgecolor="black",
                    linewidth=0.5,
                    color=COLOURS.get(method, "#8c8c8c"),
                )
                drawn = True
        if not drawn:
            note_empty(ax)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(
            [f"{e.get('key')}\n{f}" for e, f in groups],
            fontsize=7,
            rotation=30 if len(groups) > 6 else 0,
        )
        if key == "nodes_per_ca":
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        else:
            ax.set_ylim(0, 1.05)
        ax.set(title=title)
        legend(ax, loc="lower right")
    fig.suptitle("Graph methods against the deposited model, per map and field", fontsize=12)
    fig.tight_layout()
    return fig


def fig_interpolation(
    entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any], plt: Any
) -> Any:
    """Interpolation errors per method: this run beside the study."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    study = ref.get("interpolation") or []
    methods = []
    for e in entries:
        for m in get_path(e, "interpolation", "methods") or {}:
            if m not in methods:
                methods.append(m)
    order = [m for m in ("trilinear", "spline", "fourier", "neural") if m in methods]
    order += [m for m in methods if m not in order]
    markers = {"trilinear": "o", "spline": "s", "fourier": "v", "neural": "D"}
    for ax, key, ylabel, study_cols in (
        (ax1, "mae", "MAE (normalised density)", ("Linear MAE", "Neural MAE")),
        (
            ax2,
            "max_abs",
            "max |error| (normalised density)",
            (
                ("Linear Min. Error", "Linear Max. Error"),
                ("Neural Min. Error", "Neural Max. Error"),
            ),
        ),
    ):
        drawn = False
        if study:
            for col, label, marker in (
                (study_cols[0], "study: trilinear (misaligned grid)", "o"),
                (study_cols[1], "study: neural", "D"),
            ):
                xs, ys = [], []
                for r in study:
                    x = number(r.get("Resolution"))
                    if isinstance(col, tuple):
                        lo, hi = number(r.get(col[0])), number(r.get(col[1]))
                        y = None if lo is None or hi is None else max(abs(lo), abs(hi))
                    else:
                        y = number(r.get(col))
                    if x is not None and y is not None and y > 0:
                        xs.append(x)
                        ys.append(y)
                if xs:
                    ax.scatter(
                        xs,
                        ys,
                        s=12,
                        marker=marker,
                        facecolor="none",
                        edgecolor=COLOURS["study"],
                        alpha=0.7,
                        label=label,
                    )
                    drawn = True
        for m in order:
            xs, ys = pairs(entries, ("resolution",), ("interpolation", "methods", m, key))
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
            if pts:
                scatter_run(
                    ax,
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    f"this run: {METHOD_LABELS.get(m, m)}",
                    colour=COLOURS.get(m, None),
                    marker=markers.get(m, "o"),
                )
                drawn = True
        if not drawn:
            note_empty(ax)
        else:
            ax.set_yscale("log")
        ax.set(xlabel="map resolution (Å)", ylabel=ylabel)
    ax1.set_title("Mean absolute error at the control's non-zero voxels")
    ax2.set_title("Largest absolute error")
    fig.suptitle("Resampling a map simulated at resolution/3 onto a 0.2 Å grid", fontsize=12)
    handles, labels = ax1.get_legend_handles_labels()
    if handles:  # one legend for both panels, under them
        fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
        fig.tight_layout(rect=(0, 0.13, 1, 1))
    else:
        fig.tight_layout()
    return fig


def make_figures(
    metrics: Mapping[str, Any],
    outdir: str | os.PathLike,
    *,
    reference_dir: str | os.PathLike | None = None,
    names: Sequence[str] = FIGURES,
) -> list[Path]:
    """Draw the figures ``names`` into ``outdir`` as PNG and SVG; returns the files."""
    plt = pyplot()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    entries = list((metrics.get("entries") or {}).values())
    ref = load_reference(reference_dir)
    makers = {
        "training_time": lambda: fig_training_time(entries, ref, plt),
        "file_size": lambda: fig_file_size(entries, ref, plt),
        "graph_metrics": lambda: fig_graph_metrics(
            entries, ref, plt, metrics.get("graph_fields") or ("neural", "spline")
        ),
        "graph_methods": lambda: fig_graph_methods(
            entries,
            plt,
            metrics.get("graph_methods") or ("study",),
            metrics.get("graph_fields") or ("neural", "spline"),
        ),
        "interpolation_error": lambda: fig_interpolation(entries, ref, plt),
    }
    paths: list[Path] = []
    for name in names:
        if name not in makers:
            raise ValueError(f"unknown figure {name!r} (known: {', '.join(makers)})")
        fig = makers[name]()
        paths += save_figure(fig, out, name)
        plt.close(fig)
        logger.info("figure %s", name)
    return paths
