"""Point labels that do not overlap: a small deterministic placement for the figures.

Each label tries offsets around its point (right-below, right-above, left-above, left-below,
then the same further out) and takes the first whose box meets no box placed before it and
no marker; a label moved far from its point gets a thin leader line. Boxes are estimated from
the font size (no renderer needed), in display pixels, after the axes' limits and scales are
final: call it last, once the axes are set.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Offsets (points) of a label's anchor from its point, tried in order, then scaled out.
_OFFSETS = ((6, -10), (6, 4), (-6, 4), (-6, -10), (0, 10), (0, -16))
_SCALES = (1.0, 2.0, 3.0, 4.5, 6.0)
#: Half the size (pixels) of the square kept free around every marker.
MARKER_PX = 5.0


def _overlaps(box: np.ndarray, boxes: Sequence[np.ndarray]) -> bool:
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes)


def place_labels(
    ax: Any,
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    *,
    fontsize: float = 8,
) -> list[np.ndarray]:
    """Annotate each point (data coordinates) with its label without overlaps where any
    candidate offset allows; returns the label boxes ``(x0, y0, x1, y1)`` in display pixels."""
    if len(points) != len(labels):
        raise ValueError("one label per point")
    ax.get_xlim(), ax.get_ylim()  # settles autoscaled limits before the transform is used
    dpi_scale = ax.figure.dpi / 72.0
    xy_px = ax.transData.transform(np.asarray(points, dtype=float).reshape(-1, 2))
    markers = [np.r_[p - MARKER_PX, p + MARKER_PX] for p in xy_px]
    placed: list[np.ndarray] = []
    order = sorted(range(len(points)), key=lambda k: (xy_px[k][0], xy_px[k][1], labels[k]))
    for k in order:
        width = 0.6 * fontsize * len(labels[k]) * dpi_scale
        height = 1.2 * fontsize * dpi_scale
        choice, box = None, None
        for scale, (dx, dy) in itertools.product(_SCALES, _OFFSETS):
            ox, oy = dx * scale * dpi_scale, dy * scale * dpi_scale
            x0 = xy_px[k][0] + (ox - width if dx < 0 else ox - width / 2 if dx == 0 else ox)
            y0 = xy_px[k][1] + oy
            candidate = np.array([x0, y0, x0 + width, y0 + height])
            if not _overlaps(candidate, placed) and not _overlaps(candidate, markers):
                choice, box = (dx * scale, dy * scale), candidate
                break
        if choice is None:  # nowhere free: the first offset, as before
            choice = _OFFSETS[0]
            x0, y0 = xy_px[k][0] + 6 * dpi_scale, xy_px[k][1] - 10 * dpi_scale
            box = np.array([x0, y0, x0 + width, y0 + height])
        dx, dy = choice
        far = abs(dx) > abs(_OFFSETS[0][0]) * 1.5 or abs(dy) > 16
        ax.annotate(
            labels[k],
            points[k],
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=fontsize,
            ha="right" if dx < 0 else "center" if dx == 0 else "left",
            va="bottom",
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"} if far else None,
        )
        placed.append(box)
    return placed
