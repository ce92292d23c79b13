"""Shared pieces of the pipeline's figures: colours and labels kept across figures, reading
values out of metrics.json records, matplotlib set-up and saving (PNG and SVG, atomically)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_path

#: One colour per series, kept across figures.
COLOURS = {
    "neural": "#d62728",
    "spline": "#1f77b4",
    "trilinear": "#2ca02c",
    "fourier": "#9467bd",
    "deeptracer": "#ff7f0e",
    "study": "#8c8c8c",
    "study_dt": "#e5ae7a",
    "backbone": "#17becf",
    "learned": "#8c564b",
}


METHOD_LABELS = {
    "trilinear": "trilinear",
    "spline": "cubic spline",
    "fourier": "Fourier",
    "neural": "neural",
    "learned": "learned",
}


def number(value: Any) -> float | None:
    """A finite float (not the -1 the study wrote for missing values), or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v != -1 else None


def get_path(record: Any, *path: str) -> Any:
    """``record[path[0]][path[1]]...``, or None where a level is missing."""
    for p in path:
        if not isinstance(record, Mapping):
            return None
        record = record.get(p)
    return record


def pairs(
    entries: Sequence[Mapping[str, Any]],
    xpath: Sequence[str],
    ypath: Sequence[str],
    yscale: float = 1.0,
) -> tuple[list[float], list[float]]:
    """The (x, y) numbers of the entries having both (y times ``yscale``)."""
    xs, ys = [], []
    for e in entries:
        x, y = number(get_path(e, *xpath)), number(get_path(e, *ypath))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y * yscale)
    return xs, ys


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 8,
            "legend.framealpha": 0.85,
            "svg.fonttype": "none",
        }
    )
    return plt


def save_figure(fig: Any, outdir: Path, name: str) -> list[Path]:
    """Save ``fig`` as ``name``.png and .svg in ``outdir`` (atomically); the paths."""
    paths = []
    for ext in ("png", "svg"):
        path = outdir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        paths.append(path)
    return paths


def scatter_study(ax: Any, pts: Sequence[tuple[float, float]], label: str, **style: Any) -> None:
    """The study's published points ``[(x, y), ...]``: small translucent grey dots (``style``
    overrides size, marker or colour)."""
    ax.scatter(
        [p[0] for p in pts],
        [p[1] for p in pts],
        **{"s": 14, "color": COLOURS["study"], "alpha": 0.6, **style},
        label=label,
    )


def scatter_run(
    ax: Any,
    xs: Sequence[float],
    ys: Sequence[float],
    label: str,
    *,
    colour: Any,
    marker: str,
    size: float = 70,
) -> None:
    """This run's points: large markers outlined in black, drawn above the study's."""
    ax.scatter(
        xs, ys, s=size, marker=marker, color=colour, edgecolor="black", zorder=3, label=label
    )


def note_empty(ax: Any, text: str = "no data in this run") -> None:
    """Write ``text`` across an axes that has nothing to draw."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="#666666",
        fontsize=9,
    )


def legend(ax: Any, loc: str = "best", *, below: bool = False) -> None:
    """A legend where something labelled was drawn (``below``: under the axes)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if below:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    else:
        ax.legend(loc=loc)


def log_axes(ax: Any, *, x: bool = False, y: bool = False) -> None:
    """Log scales on axes that hold data (an empty axis stays linear)."""
    if ax.has_data():
        if x:
            ax.set_xscale("log")
        if y:
            ax.set_yscale("log")


def device_label(entries: Sequence[Mapping[str, Any]]) -> str:
    """The devices the entries' neural fits ran on, for a figure's label."""
    devices = sorted(
        {str(get_path(e, "neural", "device")) for e in entries if get_path(e, "neural", "device")}
    )
    presets = sorted(
        {str(get_path(e, "neural", "preset")) for e in entries if get_path(e, "neural", "preset")}
    )
    parts = []
    if presets:
        parts.append("/".join(presets) + " preset")
    if devices:
        parts.append("/".join(d.upper() if d == "cpu" else d for d in devices))
    return ", ".join(parts)
