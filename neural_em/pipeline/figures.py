"""The study's figures from the pipeline's ``metrics.json``, ours beside the study's results.

:func:`make_figures` draws, as PNG (for reading) and SVG (for print):

* ``training_time``: neural-map training time against voxel count, per map (total) and per
  region;
* ``file_size``: ``.neural`` file size against the MRC file of the same box;
* ``graph_metrics``: C-alpha recall, precision, RMSD and nodes per C-alpha against resolution,
  for the graphs of the neural and the spline field (and DeepTracer where it ran);
* ``interpolation_error``: mean absolute and maximum interpolation error against resolution,
  per method.

Where ``reference_dir`` holds the study's published results (``paper_graph_evaluation.json``,
``paper_interpolation_evaluation.csv``), they are drawn in grey beside ours.
:func:`write_summary_html` puts the figures and tables into one self-contained HTML page.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

FIGURES = ("training_time", "file_size", "graph_metrics", "graph_methods",
           "interpolation_error")
#: One colour per series, kept across figures.
COLOURS = {"neural": "#d62728", "spline": "#1f77b4", "trilinear": "#2ca02c",
           "fourier": "#9467bd", "deeptracer": "#ff7f0e", "study": "#8c8c8c",
           "study_dt": "#e5ae7a", "backbone": "#17becf", "learned": "#8c564b"}
METHOD_LABELS = {"trilinear": "trilinear", "spline": "cubic spline", "fourier": "Fourier",
                 "neural": "neural", "learned": "learned"}


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


def _f(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v != -1 else None


def _get(record: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(record, Mapping):
            return None
        record = record.get(p)
    return record


def _pairs(entries: Sequence[Mapping[str, Any]], xpath: Sequence[str], ypath: Sequence[str],
           yscale: float = 1.0) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for e in entries:
        x, y = _f(_get(e, *xpath)), _f(_get(e, *ypath))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y * yscale)
    return xs, ys


# ====================================================================== drawing
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "font.size": 10,
                         "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
                         "legend.fontsize": 8, "legend.framealpha": 0.85,
                         "svg.fonttype": "none"})
    return plt


def _save(fig: Any, outdir: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = outdir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        paths.append(path)
    return paths


def _note_empty(ax: Any, text: str = "no data in this run") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color="#666666", fontsize=9)


def _legend(ax: Any, loc: str = "best", *, below: bool = False) -> None:
    """A legend where something labelled was drawn (``below``: under the axes)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if below:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    else:
        ax.legend(loc=loc)


def _log_axes(ax: Any, *, x: bool = False, y: bool = False) -> None:
    """Log scales on axes that hold data (an empty axis stays linear)."""
    if ax.has_data():
        if x:
            ax.set_xscale("log")
        if y:
            ax.set_yscale("log")


def _device_label(entries: Sequence[Mapping[str, Any]]) -> str:
    devices = sorted({str(_get(e, "neural", "device")) for e in entries
                      if _get(e, "neural", "device")})
    presets = sorted({str(_get(e, "neural", "preset")) for e in entries
                      if _get(e, "neural", "preset")})
    parts = []
    if presets:
        parts.append("/".join(presets) + " preset")
    if devices:
        parts.append("/".join(d.upper() if d == "cpu" else d for d in devices))
    return ", ".join(parts)


def fig_training_time(entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any],
                      plt: Any) -> Any:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    label = f"this run ({_device_label(entries)})" if entries else "this run"
    study = ref.get("graph") or []
    # total per map
    if study:
        xs = [_f(r.get("Voxel count")) for r in study]
        ys = [_f(r.get("Total training time")) for r in study]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x and y]
        ax1.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=COLOURS["study"],
                    alpha=0.6, label=f"study (paper preset, GPU; {len(pts)} maps)")
    xs, ys = _pairs(entries, ("neural", "crop_voxels"), ("neural", "total_training_s"))
    if xs:
        ax1.scatter(xs, ys, s=60, marker="D", color=COLOURS["neural"], edgecolor="black",
                    zorder=3, label=label)
    for e in entries:
        x, y = _f(_get(e, "neural", "crop_voxels")), _f(_get(e, "neural", "total_training_s"))
        if x and y:
            ax1.annotate(e["key"], (x, y), textcoords="offset points", xytext=(6, -10),
                         fontsize=8)
    _log_axes(ax1, x=True, y=True)
    ax1.set(xlabel="voxels fitted (count)", ylabel="total training time (s)",
            title="Training time per map")
    if not xs and not study:
        _note_empty(ax1)
    _legend(ax1, below=True)
    # per region
    if study:
        pts = []
        for r in study:
            n, v, t = (_f(r.get("Neural region count")), _f(r.get("Voxel count")),
                       _f(r.get("Average region training time")))
            if n and v and t:
                pts.append((v / n, t))
        ax2.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=COLOURS["study"],
                    alpha=0.6, label="study: map mean (voxels / regions)")
    rx, ry = [], []
    for e in entries:
        for r in _get(e, "neural", "per_region") or []:
            if r.get("skipped"):
                continue
            v, t = _f(r.get("voxels")), _f(r.get("seconds"))
            if v and t:
                rx.append(v)
                ry.append(t)
    if rx:
        ax2.scatter(rx, ry, s=22, color=COLOURS["neural"], alpha=0.75, edgecolor="black",
                    linewidth=0.4, zorder=3,
                    label=f"this run: wall time until each region stopped ({len(rx)}, trained together)")
        mx, my = [], []
        for e in entries:
            per = [r for r in _get(e, "neural", "per_region") or [] if not r.get("skipped")
                   and _f(r.get("voxels"))]
            mean_t = _f(_get(e, "neural", "mean_region_training_s"))
            if per and mean_t:
                mx.append(sum(r["voxels"] for r in per) / len(per))
                my.append(mean_t)
        if mx:
            ax2.scatter(mx, my, s=70, marker="D", color="white", edgecolor=COLOURS["neural"],
                        linewidth=2, zorder=4, label="this run: total time / regions")
    elif entries:
        mx, my = _pairs(entries, ("neural", "crop_voxels"), ("neural", "mean_region_training_s"))
        if mx:
            ax2.scatter(mx, my, s=60, marker="D", color=COLOURS["neural"], edgecolor="black",
                        zorder=3, label="this run: map mean")
    _log_axes(ax2, x=True, y=True)
    ax2.set(xlabel="voxels in the region (count)", ylabel="training time (s)",
            title="Training time per region")
    if not rx and not study:
        _note_empty(ax2)
    _legend(ax2, below=True)
    fig.suptitle("Neural map training time against map size", fontsize=12)
    fig.tight_layout()
    return fig


def fig_file_size(entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any],
                  plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    mb = 1e-6
    allv = []
    study = ref.get("graph") or []
    if study:
        pts = [(_f(r.get("Native save size")), _f(r.get("Neural save size"))) for r in study]
        pts = [(x * mb, y * mb) for x, y in pts if x and y]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color=COLOURS["study"],
                   alpha=0.6, label="study: neural (paper preset) vs whole map")
        allv += [v for p in pts for v in p]
    xs, ys = _pairs(entries, ("neural", "crop_mrc_bytes"), ("neural", "bytes"), mb)
    xs = [x * mb for x in xs]
    if xs:
        ax.scatter(xs, ys, s=70, marker="D", color=COLOURS["neural"], edgecolor="black",
                   zorder=3, label=f"this run: neural ({_device_label(entries)}) vs same box")
    sx, sy = _pairs(entries, ("neural", "crop_mrc_bytes"), ("spline", "bytes"), mb)
    sx = [x * mb for x in sx]
    if sx:
        ax.scatter(sx, sy, s=50, marker="s", color=COLOURS["spline"], edgecolor="black",
                   zorder=3, label="this run: spline field vs same box")
    allv += xs + ys + sx + sy
    if allv:
        lo, hi = min(allv) / 2, max(allv) * 2
        for factor, style, text in ((1.0, "-", "same size"), (0.5, ":", "half"),
                                    (2.0, "--", "twice")):
            ax.plot([lo, hi], [lo * factor, hi * factor], style, color="black", lw=0.8,
                    alpha=0.6, label=f"y = {factor:g} x ({text})")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set(xscale="log", yscale="log")
    else:
        _note_empty(ax)
    ax.set(xlabel="MRC file size, float32 (MB)", ylabel="field file size (MB)",
           title="Neural map file size against the MRC map")
    _legend(ax)
    fig.tight_layout()
    return fig


def fig_graph_metrics(entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any],
                      plt: Any, fields: Sequence[str] = ("neural", "spline")) -> Any:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [("recall", 100.0, "% C-α with a node (≤ 3 Å, one-to-one)",
               "C-α recall", "% C-a with Node", "DeepTracer % matching"),
              ("precision", 100.0, "% nodes with a C-α (≤ 3 Å)", "Precision",
               "% Node with C-a", None),
              ("rmsd", 1.0, "RMSD of matched pairs (Å)", "RMSD", "Graph RMSD",
               "DeepTracer RMSD"),
              ("nodes_per_ca", 1.0, "nodes per C-α atom", "Nodes per C-α", None, None)]
    study = ref.get("graph") or []
    for ax, (key, scale, ylabel, title, ref_col, dt_col) in zip(axes.ravel(), panels,
                                                                 strict=True):
        drawn = False
        if study:
            if ref_col:
                xs = [_f(r.get("resolution")) for r in study]
                ys = [_f(r.get(ref_col)) for r in study]
            else:  # nodes per C-alpha from counts
                xs = [_f(r.get("resolution")) for r in study]
                ys = [(_f(r.get("Num nodes")) or math.nan) / (_f(r.get("Num C-a")) or math.nan)
                      for r in study]
            pts = [(x, y) for x, y in zip(xs, ys, strict=True)
                   if x is not None and y is not None and math.isfinite(y)]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14,
                           color=COLOURS["study"], alpha=0.6,
                           label=f"study: neural graph ({len(pts)} maps)")
                drawn = True
            if dt_col:
                pts = [(_f(r.get("resolution")), _f(r.get(dt_col))) for r in study]
                pts = [p for p in pts if p[0] is not None and p[1] is not None]
                if pts:
                    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, marker="^",
                               color=COLOURS["study_dt"], alpha=0.6, label="study: DeepTracer")
        for field, marker in (("neural", "D"), ("spline", "s")):
            if field not in fields:
                continue
            xs, ys = _pairs(entries, ("resolution",), ("graph", field, key), scale)
            if xs:
                ax.scatter(xs, ys, s=70, marker=marker, color=COLOURS[field], edgecolor="black",
                           zorder=3, label=f"this run: {field} field graph")
                drawn = True
        xs, ys = _pairs(entries, ("resolution",), ("deeptracer", key), scale)
        if xs:
            ax.scatter(xs, ys, s=60, marker="^", color=COLOURS["deeptracer"],
                       edgecolor="black", zorder=3, label="this run: DeepTracer")
        if not drawn:
            _note_empty(ax)
        if key in ("recall", "precision"):
            ax.set_ylim(0, 105)
        elif key == "nodes_per_ca":
            _log_axes(ax, y=True)
        ax.set(xlabel="map resolution (Å)", ylabel=ylabel, title=title)
        _legend(ax)
    fig.suptitle("Density graphs against the deposited model's C-α atoms", fontsize=12)
    fig.tight_layout()
    return fig


def fig_graph_methods(entries: Sequence[Mapping[str, Any]], plt: Any,
                      methods: Sequence[str] = ("study", "backbone"),
                      fields: Sequence[str] = ("neural", "spline")) -> Any:
    """The graph methods per map: recall, one-to-one precision, F1, chain recall and edge
    precision as bars (one group per map and field, one bar per method), nodes per C-alpha."""
    from neural_em.pipeline.collect import GRAPH_RECORD

    panels = [("recall", "C-α recall"), ("one_to_one_precision", "one-to-one precision"),
              ("f1", "F1"), ("chain_recall", "chain recall"),
              ("edge_precision", "edge precision"), ("nodes_per_ca", "nodes per C-α")]
    groups = [(e, f) for e in entries for f in fields
              if any(_f(_get(e, GRAPH_RECORD.get(m, ""), f, "recall")) is not None
                     for m in methods)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    width = 0.8 / max(1, len(methods))
    for ax, (key, title) in zip(axes.ravel(), panels, strict=True):
        drawn = False
        for k, method in enumerate(methods):
            xs, ys = [], []
            for g, (e, f) in enumerate(groups):
                y = _f(_get(e, GRAPH_RECORD.get(method, ""), f, key))
                if y is not None:
                    xs.append(g + (k - (len(methods) - 1) / 2) * width)
                    ys.append(y)
            if xs:
                ax.bar(xs, ys, width=width, label=method, edgecolor="black", linewidth=0.5,
                       color=COLOURS.get(method, "#8c8c8c"))
                drawn = True
        if not drawn:
            _note_empty(ax)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{e.get('key')}\n{f}" for e, f in groups], fontsize=7,
                           rotation=30 if len(groups) > 6 else 0)
        if key == "nodes_per_ca":
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        else:
            ax.set_ylim(0, 1.05)
        ax.set(title=title)
        _legend(ax, loc="lower right")
    fig.suptitle("Graph methods against the deposited model, per map and field", fontsize=12)
    fig.tight_layout()
    return fig


def fig_interpolation(entries: Sequence[Mapping[str, Any]], ref: Mapping[str, Any],
                      plt: Any) -> Any:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    study = ref.get("interpolation") or []
    methods = []
    for e in entries:
        for m in _get(e, "interpolation", "methods") or {}:
            if m not in methods:
                methods.append(m)
    order = [m for m in ("trilinear", "spline", "fourier", "neural") if m in methods]
    order += [m for m in methods if m not in order]
    markers = {"trilinear": "o", "spline": "s", "fourier": "v", "neural": "D"}
    for ax, key, ylabel, study_cols in (
            (ax1, "mae", "MAE (normalised density)",
             ("Linear MAE", "Neural MAE")),
            (ax2, "max_abs", "max |error| (normalised density)",
             (("Linear Min. Error", "Linear Max. Error"),
              ("Neural Min. Error", "Neural Max. Error")))):
        drawn = False
        if study:
            for col, label, marker in ((study_cols[0], "study: trilinear (misaligned grid)",
                                        "o"), (study_cols[1], "study: neural", "D")):
                xs, ys = [], []
                for r in study:
                    x = _f(r.get("Resolution"))
                    if isinstance(col, tuple):
                        lo, hi = _f(r.get(col[0])), _f(r.get(col[1]))
                        y = None if lo is None or hi is None else max(abs(lo), abs(hi))
                    else:
                        y = _f(r.get(col))
                    if x is not None and y is not None and y > 0:
                        xs.append(x)
                        ys.append(y)
                if xs:
                    ax.scatter(xs, ys, s=12, marker=marker, facecolor="none",
                               edgecolor=COLOURS["study"], alpha=0.7, label=label)
                    drawn = True
        for m in order:
            xs, ys = _pairs(entries, ("resolution",), ("interpolation", "methods", m, key))
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=70,
                           marker=markers.get(m, "o"), color=COLOURS.get(m, None),
                           edgecolor="black", zorder=3,
                           label=f"this run: {METHOD_LABELS.get(m, m)}")
                drawn = True
        if not drawn:
            _note_empty(ax)
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


def make_figures(metrics: Mapping[str, Any], outdir: str | os.PathLike, *,
                 reference_dir: str | os.PathLike | None = None,
                 names: Sequence[str] = FIGURES) -> list[Path]:
    """Draw the figures ``names`` into ``outdir`` as PNG and SVG; returns the files."""
    plt = _pyplot()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    entries = list((metrics.get("entries") or {}).values())
    ref = load_reference(reference_dir)
    makers = {
        "training_time": lambda: fig_training_time(entries, ref, plt),
        "file_size": lambda: fig_file_size(entries, ref, plt),
        "graph_metrics": lambda: fig_graph_metrics(
            entries, ref, plt, metrics.get("graph_fields") or ("neural", "spline")),
        "graph_methods": lambda: fig_graph_methods(
            entries, plt, metrics.get("graph_methods") or ("study",),
            metrics.get("graph_fields") or ("neural", "spline")),
        "interpolation_error": lambda: fig_interpolation(entries, ref, plt),
    }
    paths: list[Path] = []
    for name in names:
        if name not in makers:
            raise ValueError(f"unknown figure {name!r} (known: {', '.join(makers)})")
        fig = makers[name]()
        paths += _save(fig, out, name)
        plt.close(fig)
        logger.info("figure %s", name)
    return paths


# ====================================================================== HTML summary
def _table_html(path: Path, max_rows: int = 200) -> str:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return "<p>(empty)</p>"
    head, body = rows[0], rows[1:]
    if not body:
        return "<p>(no rows in this run)</p>"
    parts = ["<div class='table'><table><thead><tr>"]
    parts += [f"<th>{html.escape(h)}</th>" for h in head]
    parts.append("</tr></thead><tbody>")
    for row in body[:max_rows]:
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table></div>")
    if len(body) > max_rows:
        parts.append(f"<p>{len(body) - max_rows} more rows in {html.escape(path.name)}</p>")
    return "".join(parts)


def write_table_html(table: str | os.PathLike, path: str | os.PathLike, *,
                     title: str | None = None) -> Path:
    """A CSV table as a small stand-alone HTML page (the Snakemake report shows HTML inline)."""
    table = Path(table)
    title = title or table.stem.replace("_", " ")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;"
            "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "th{background:#f3f3f3;position:sticky;top:0}</style></head><body>"
            f"<h2>{html.escape(title)}</h2>{_table_html(table, max_rows=10_000)}"
            f"<p>Source: {html.escape(table.name)}</p></body></html>\n")
    return atomic_write_text(path, page)


def write_summary_html(metrics: Mapping[str, Any], figures: Sequence[str | os.PathLike],
                       tables: Mapping[str, str | os.PathLike], path: str | os.PathLike,
                       *, title: str = "neural-em pipeline summary") -> Path:
    """One self-contained HTML page (PNG figures inlined) with the tables and settings."""
    summary = metrics.get("summary") or {}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}"
        ".table{overflow-x:auto}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow-x:auto}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{summary.get('entries', 0)} entries; neural-em "
        f"{html.escape(str(metrics.get('neural_em_version', '?')))}. DeepTracer: "
        f"{html.escape(str(metrics.get('deeptracer')))}. The interactive Snakemake report with "
        "provenance: <code>snakemake --report results/report.html</code>.</p>",
        "<h2>Summary (medians)</h2><div class='table'><table>",
    ]
    for key, value in summary.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(text)}</td></tr>")
    parts.append("</table></div><h2>Figures</h2>")
    for fig in figures:
        fig = Path(fig)
        data = base64.b64encode(fig.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(fig.stem.replace('_', ' '))}</h3>"
                     f"<img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Tables</h2>")
    for name, table in tables.items():
        table = Path(table)
        parts.append(f"<h3>{html.escape(name)} ({html.escape(table.name)})</h3>")
        parts.append(_table_html(table))
    settings = json.dumps(metrics.get("settings") or {}, indent=2, default=str)
    parts.append(f"<h2>Settings</h2><pre>{html.escape(settings)}</pre></body></html>\n")
    return atomic_write_text(path, "".join(parts))
