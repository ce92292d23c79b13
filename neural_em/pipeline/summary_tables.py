"""The summary's medians as tables: one per kind of result, instead of a list of raw keys.

``metrics.json``'s ``summary`` holds flat keys (``graph_backbone_spline_f1_median``, ...); here
they become a graph table (rows method × field, columns the headline metrics), a fit table and
an interpolation table. Rows the run did not build (every value null) are left out; the raw
keys stay in metrics.json. A key that fits no table is listed under "other", never dropped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

#: Graph columns: (summary metric name, column title).
GRAPH_COLUMNS = (
    ("recall", "recall"),
    ("one_to_one_precision", "one-to-one precision"),
    ("f1", "F1"),
    ("nodes_per_ca", "nodes per C-alpha"),
    ("chain_recall", "chain recall"),
    ("edge_precision", "edge precision"),
    ("seconds", "seconds"),
)
#: Graph columns of the secondary-structure table (C-alpha classes by P-SEA; labels: backbone).
SSE_COLUMNS = (
    ("recall_helix", "helix C-alpha recall"),
    ("recall_strand", "strand C-alpha recall"),
    ("recall_coil", "coil C-alpha recall"),
    ("label_precision_helix", "helix label precision"),
    ("label_recall_helix", "helix label recall"),
    ("label_precision_strand", "strand label precision"),
    ("label_recall_strand", "strand label recall"),
)
#: Other graph medians in metrics.json, not shown as columns.
GRAPH_OTHER = (
    "coverage",
    "precision",
    "rmsd",
    "mean_degree",
    "label_precision_coil",
    "label_recall_coil",
)
FIT_ROWS = (
    ("training_s_median", "neural fit: training time (s)"),
    ("region_training_s_median", "neural fit: training time per region (s)"),
    ("size_ratio_crop_mrc_median", "neural file size / MRC of the crop"),
)
_METRICS = "|".join(
    sorted((m for m, _ in GRAPH_COLUMNS + SSE_COLUMNS), key=len, reverse=True) + list(GRAPH_OTHER)
)
_GRAPH_KEY = re.compile(rf"^graph(?:_(backbone))?_([a-z]+)_({_METRICS})_median$")
_INTERP_KEY = re.compile(r"^interpolation_(.+)_mae_median$")


def summary_tables(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"graphs": [(method, field, {metric: value})], "fits": [(title, value)],
    "interpolation": [(method, value)], "other": [(key, value)]}``, rows with no value left out."""
    graphs: dict[tuple[str, str], dict[str, Any]] = {}
    fits, interpolation, other = [], [], []
    fit_titles = dict(FIT_ROWS)
    for key, value in summary.items():
        if key == "entries":
            continue
        match = _GRAPH_KEY.match(key)
        if match:
            method = match.group(1) or "study"
            graphs.setdefault((method, match.group(2)), {})[match.group(3)] = value
            continue
        if value is None:
            continue
        if key in fit_titles:
            fits.append((fit_titles[key], value))
        elif m := _INTERP_KEY.match(key):
            interpolation.append((m.group(1), value))
        else:
            other.append((key, value))
    rows = [
        (method, field, values)
        for (method, field), values in graphs.items()
        if any(v is not None for v in values.values())
    ]
    rows.sort(key=lambda r: (r[0] != "study", r[0], r[1]))
    fits.sort(key=lambda r: [t for _, t in FIT_ROWS].index(r[0]))
    return {"graphs": rows, "fits": fits, "interpolation": interpolation, "other": other}


def _cell(value: Any) -> str:
    if value is None:
        return "<td>–</td>"
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return f"<td>{html.escape(text)}</td>"


def summary_tables_html(summary: Mapping[str, Any]) -> str:
    """The tables as HTML (``<h3>`` and ``<table>`` per kind of result)."""
    t = summary_tables(summary)
    parts = [
        f"<p>Medians over {html.escape(str(summary.get('entries', 0)))} entries; every key "
        "is in <code>metrics.json</code> (<code>summary</code>).</p>"
    ]
    if t["graphs"]:
        head = "".join(f"<th>{html.escape(title)}</th>" for _, title in GRAPH_COLUMNS)
        parts.append(
            "<h3>Density graphs</h3><div class='table'><table class='summary-graphs'>"
            f"<thead><tr><th>method</th><th>field</th>{head}</tr></thead><tbody>"
        )
        for method, field, values in t["graphs"]:
            cells = "".join(_cell(values.get(m)) for m, _ in GRAPH_COLUMNS)
            parts.append(
                f"<tr><th>{html.escape(method)}</th><th>{html.escape(field)}</th>{cells}</tr>"
            )
        parts.append("</tbody></table></div>")
        parts.append(_sse_table(t["graphs"]))
    for name, title, rows in (
        ("fits", "Fits", t["fits"]),
        ("interpolation", "Interpolation: mean abs error", t["interpolation"]),
        ("other", "Other", t["other"]),
    ):
        if not rows:
            continue
        parts.append(f"<h3>{title}</h3><div class='table'><table class='summary-{name}'><tbody>")
        parts += [f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in rows]
        parts.append("</tbody></table></div>")
    return "".join(parts)


def _sse_table(graphs: list[tuple[str, str, dict[str, Any]]]) -> str:
    """The graphs' medians by secondary structure, where any was recorded ("" otherwise)."""
    rows = [r for r in graphs if any(r[2].get(m) is not None for m, _ in SSE_COLUMNS)]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in SSE_COLUMNS)
    parts = [
        "<h3>Density graphs by secondary structure</h3><p>C-alpha classes of the model by "
        "P-SEA; labels: the backbone graph's node <code>sse</code>.</p><div class='table'>"
        "<table class='summary-sse'>"
        f"<thead><tr><th>method</th><th>field</th>{head}</tr></thead><tbody>"
    ]
    for method, field, values in rows:
        cells = "".join(_cell(values.get(m)) for m, _ in SSE_COLUMNS)
        parts.append(f"<tr><th>{html.escape(method)}</th><th>{html.escape(field)}</th>{cells}</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)
