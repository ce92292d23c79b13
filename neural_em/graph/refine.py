"""Refinements of the node set of a density graph (off by default).

``ridge``: drop *detached satellites*. Two nodes are *ridge-linked* when they are at most
``link_radius_A`` (4.5 Å, a little more than the 3.8 Å C-alpha spacing) apart and the field
stays high all along the straight segment between them (sampled every 0.5 Å or finer): at or
above the seed threshold, or, for nodes barely above the threshold, at or above
``saddle_fraction`` (0.95) of the weaker node's density (a saddle less than 5 % deep does not
separate two maxima; without it a node 0.01 above the threshold is cut off by any dip). A node is *backbone-like* when it is ridge-linked to at least two
nodes (the chain continues on both sides). A node is a detached satellite, and is dropped,
when it is ridge-linked to no node at all while a denser backbone-like node lies within
``satellite_radius_A`` (4.0 Å): a side-chain tip, a carbonyl bump or a noise blob sitting
beside the chain but not joined to it by density. Isolated nodes with no backbone beside
them (weak stretches of chain, the edges of a segmented map) are kept, which is what keeps
the recall of C-alphas. See docs/graph.md for the measured trade-off.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from neural_em.errors import InputError
from neural_em.fields.base import DensityField

logger = logging.getLogger(__name__)

#: Largest spacing (Å) of the samples along a segment between two nodes.
SEGMENT_STEP_A = 0.5
#: Two nodes whose segment dips less than this fraction below the weaker one stay linked.
SADDLE_FRACTION = 0.95


def segment_minimum(
    field: DensityField,
    a: np.ndarray,
    b: np.ndarray,
    *,
    step_A: float = SEGMENT_STEP_A,
    chunk_pairs: int = 1 << 14,
) -> np.ndarray:
    """Lowest density ``(m,)`` on the straight segments from ``a[i]`` to ``b[i]`` (both
    ``(m, 3)`` Å, inside the box), end points excluded, sampled at most ``step_A`` apart."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    out = np.full(len(a), np.inf)
    if len(a) == 0:
        return out
    longest = float(np.max(np.linalg.norm(b - a, axis=1)))
    n_inner = max(1, int(np.ceil(longest / step_A)) - 1)
    t = np.arange(1, n_inner + 1) / (n_inner + 1)
    for start in range(0, len(a), chunk_pairs):
        sa, sb = a[start : start + chunk_pairs], b[start : start + chunk_pairs]
        pts = sa[:, None, :] + (sb - sa)[:, None, :] * t[None, :, None]
        dens = field._densities_fast(pts.reshape(-1, 3)).reshape(len(sa), n_inner)
        out[start : start + len(sa)] = np.nanmin(np.where(np.isfinite(dens), dens, -np.inf), axis=1)
    return out


def ridge_links(
    field: DensityField,
    positions: np.ndarray,
    *,
    threshold: float,
    link_radius_A: float = 4.5,
    densities: np.ndarray | None = None,
    saddle_fraction: float = SADDLE_FRACTION,
) -> np.ndarray:
    """Pairs ``(k, 2)`` of nodes at most ``link_radius_A`` apart joined by density along the
    straight segment between them: its lowest value ``>= threshold``, or ``>=
    saddle_fraction`` × the lower of the two node ``densities`` ``(n,)`` (when given)."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = cKDTree(pos).query_pairs(float(link_radius_A), output_type="ndarray")
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    low = segment_minimum(field, pos[pairs[:, 0]], pos[pairs[:, 1]])
    linked = low >= threshold
    if densities is not None:
        dens = np.asarray(densities, dtype=np.float64).reshape(-1)
        weaker = np.minimum(dens[pairs[:, 0]], dens[pairs[:, 1]])
        linked |= low >= float(saddle_fraction) * weaker
    return pairs[linked]


def detached_satellites(
    field: DensityField,
    positions: np.ndarray,
    densities: np.ndarray,
    *,
    threshold: float,
    link_radius_A: float = 4.5,
    satellite_radius_A: float = 4.0,
    backbone_degree: int = 2,
) -> np.ndarray:
    """Boolean ``(n,)``: nodes ridge-linked to nothing with a denser backbone-like node
    (ridge-linked to ``>= backbone_degree`` nodes) within ``satellite_radius_A``."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    dens = np.asarray(densities, dtype=np.float64).reshape(-1)
    n = len(pos)
    drop = np.zeros(n, dtype=bool)
    if n < 2:
        return drop
    links = ridge_links(
        field, pos, threshold=threshold, link_radius_A=link_radius_A, densities=dens
    )
    degree = np.bincount(links.ravel(), minlength=n)
    lonely = np.flatnonzero(degree == 0)
    if len(lonely) == 0:
        return drop
    backbone = np.flatnonzero(degree >= backbone_degree)
    if len(backbone) == 0:
        return drop
    near = cKDTree(pos[backbone]).query_ball_point(pos[lonely], float(satellite_radius_A))
    for k, i in enumerate(lonely):
        if any(dens[backbone[j]] > dens[i] for j in near[k]):
            drop[i] = True
    return drop


def refine_nodes(
    field: DensityField,
    positions: np.ndarray,
    values: np.ndarray,
    *,
    method: str,
    threshold: float,
    resolution_A: float | None = None,
    link_radius_A: float = 4.5,
    satellite_radius_A: float = 4.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which nodes to keep (boolean ``(n,)``) under a refinement, and counts for the stats.

    positions: ``(n, 3)`` Å; values: ``(n, 4)`` field values at the nodes; ``threshold``:
    the seed threshold (normalised density). ``resolution_A`` is accepted for refinements
    that scale with it (``ridge`` does not: its distances come from the C-alpha spacing).
    """
    if method == "ridge":
        drop = detached_satellites(
            field,
            positions,
            values[:, 0],
            threshold=threshold,
            link_radius_A=link_radius_A,
            satellite_radius_A=satellite_radius_A,
        )
        logger.info(
            "ridge refinement dropped %d of %d nodes (detached satellites)",
            int(drop.sum()),
            len(drop),
        )
        return ~drop, {"refine_dropped": int(drop.sum())}
    raise InputError(f"unknown refinement {method!r} (known: 'ridge')")
