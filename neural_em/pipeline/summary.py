"""The run's HTML pages: each CSV table as a small page (shown inline by the Snakemake report)
and ``results/summary.html``, one self-contained page with the figures (PNG inlined), the
tables and the run's settings."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_write_text
from neural_em.pipeline.summary_tables import summary_tables_html


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


def write_table_html(
    table: str | os.PathLike, path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """A CSV table as a small stand-alone HTML page (the Snakemake report shows HTML inline)."""
    table = Path(table)
    title = title or table.stem.replace("_", " ")
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#f3f3f3;position:sticky;top:0}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>{_table_html(table, max_rows=10_000)}"
        f"<p>Source: {html.escape(table.name)}</p></body></html>\n"
    )
    return atomic_write_text(path, page)


def _views_html(views: Mapping[str, Sequence[str | os.PathLike]], here: Path) -> str:
    """Links to each entry's view page and ChimeraX file, relative to the summary page."""
    rows = []
    for entry, files in views.items():
        links = []
        for f in files:
            rel = Path(os.path.relpath(Path(f).resolve(), here.resolve())).as_posix()
            kind = "3D view" if rel.endswith(".html") else "ChimeraX (.cxc)"
            links.append(f"<a href='{html.escape(rel)}'>{kind}</a>")
        rows.append(f"<li>{html.escape(entry)}: {' · '.join(links)}</li>")
    return (
        "<h2>Views</h2><p>Each entry's map, model and graphs in 3D: the page opens offline in "
        "a browser; the <code>.cxc</code> opens the same scene in ChimeraX "
        "(<code>chimerax results/view/ENTRY.cxc</code>).</p><ul class='views'>"
        + "".join(rows)
        + "</ul>"
    )


def write_summary_html(
    metrics: Mapping[str, Any],
    figures: Sequence[str | os.PathLike],
    tables: Mapping[str, str | os.PathLike],
    path: str | os.PathLike,
    *,
    title: str = "neural-em pipeline summary",
    views: Mapping[str, Sequence[str | os.PathLike]] | None = None,
) -> Path:
    """One self-contained HTML page (PNG figures inlined) with the tables and settings.

    ``views``: entry -> its view files (``.html``, ``.cxc``), linked relative to the page."""
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
        "<h2>Summary (medians)</h2>",
        summary_tables_html(summary),
    ]
    if views:
        parts.append(_views_html(views, Path(path).parent))
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        fig = Path(fig)
        data = base64.b64encode(fig.read_bytes()).decode("ascii")
        parts.append(
            f"<h3>{html.escape(fig.stem.replace('_', ' '))}</h3>"
            f"<img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>"
        )
    parts.append("<h2>Tables</h2>")
    for name, table in tables.items():
        table = Path(table)
        parts.append(f"<h3>{html.escape(name)} ({html.escape(table.name)})</h3>")
        parts.append(_table_html(table))
    settings = json.dumps(metrics.get("settings") or {}, indent=2, default=str)
    parts.append(f"<h2>Settings</h2><pre>{html.escape(settings)}</pre></body></html>\n")
    return atomic_write_text(path, "".join(parts))
