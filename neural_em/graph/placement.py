"""Nodes at residue spacing along a pruned ridge forest (step 4 of the backbone method).

A side chain leaves the backbone at its C-alpha, so the junctions of the ridge forest before
its side-chain stubs were pruned mark C-alpha positions (median 0.7-0.9 Å from a C-alpha on
EMD-3488 and EMD-6272, against 1.3 Å for any ridge point). Each unbranched segment of the
pruned forest (from a path end or branch point to the next) gets its nodes by dynamic
programming: the chosen ridge points maximise the sum of their *anchor weights* (a Gaussian
of the distance to the nearest junction) minus a quadratic penalty on the deviation of each
chord between consecutive nodes from the preferred spacing, with every chord within
``[min_A, max_A]``. The preferred spacing follows the ridge's curvature: 3.8 Å separates
consecutive C-alphas, but where the ridge winds through a helix it cuts the corners (the
curvature of its spiral is about 0.4 per Å), so consecutive residues lie closer along it than
along a straight ridge (an extended strand, curvature near 0). Path ends and branch points
are always nodes; nodes closer than ``separation_A`` to a node of higher anchor weight are
then dropped.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from neural_em.graph.forest import forest_segments

#: Penalty of a chord that no feasible predecessor allows (a break in the ridge).
_INFEASIBLE = 10.0

#: Arc (Å) before and after a ridge point over which its curvature is measured.
CURVATURE_HALF_WINDOW_A = 1.6


def anchor_weights(
    points: np.ndarray, junctions: np.ndarray, *, sigma_A: float, weight: float
) -> np.ndarray:
    """``weight * exp(-d^2 / 2 sigma^2)`` ``(n,)`` for the distance ``d`` (Å) of each of
    ``points`` ``(n, 3)`` to the nearest of ``junctions`` ``(m, 3)`` (zeros where ``m = 0``)."""
    if len(junctions) == 0 or len(points) == 0:
        return np.zeros(len(points))
    d, _ = cKDTree(junctions).query(points)
    return weight * np.exp(-0.5 * (d / sigma_A) ** 2)


def ridge_curvature(points: np.ndarray, half_window_A: float) -> np.ndarray:
    """Curvature ``(L,)`` (1/Å) of an ordered polyline ``(L, 3)`` at each point: that of the
    circle through the points ``half_window_A`` of arc before and after it (Menger), which
    smooths the jitter of single ridge points; 0 at the ends and on straight stretches."""
    n = len(points)
    if n < 3:
        return np.zeros(n)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    before = np.searchsorted(arc, arc - half_window_A, side="left").clip(0, n - 1)
    after = (np.searchsorted(arc, arc + half_window_A, side="right") - 1).clip(0, n - 1)
    a, b, c = points[before], points, points[after]
    ab, bc, ac = (np.linalg.norm(u, axis=1) for u in (b - a, c - b, c - a))
    twice_area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        curvature = 2.0 * twice_area / (ab * bc * ac)
    return np.nan_to_num(curvature, nan=0.0, posinf=0.0)


def segment_nodes(
    points: np.ndarray,
    weights: np.ndarray,
    *,
    spacing_A: np.ndarray | float,
    min_A: float,
    max_A: float,
    penalty: float,
) -> np.ndarray:
    """Positions (indices into the ordered ``points`` ``(L, 3)`` of one segment) of its nodes:
    both ends, and between them the choice maximising ``sum(weights) - penalty *
    sum((chord - spacing_A)^2)`` with chords in ``[min_A, max_A]`` (a chord outside where the
    ridge leaves no choice costs a fixed penalty instead). ``spacing_A``: Å, one value or
    ``(L,)``, the preferred chord ending at each point."""
    n = len(points)
    spacing = np.broadcast_to(np.asarray(spacing_A, dtype=np.float64), (n,))
    if n <= 2:
        return np.arange(n)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    # Predecessors further than 3 x max_A along the ridge cannot be within max_A in a chord
    # that matters; the window keeps the cost linear in the segment length.
    first = np.searchsorted(arc, arc - 3.0 * max_A, side="left")
    best = np.full(n, -np.inf)
    back = np.full(n, -1, dtype=np.int64)
    best[0] = weights[0]
    for j in range(1, n):
        lo = int(min(first[j], j - 1))
        chord = np.linalg.norm(points[lo:j] - points[j], axis=1)
        score = best[lo:j] - penalty * (chord - spacing[j]) ** 2
        feasible = (chord >= min_A) & (chord <= max_A) & np.isfinite(best[lo:j])
        if feasible.any():
            score = np.where(feasible, score, -np.inf)
        else:
            score = np.where(np.isfinite(best[lo:j]), score - _INFEASIBLE, -np.inf)
        k = int(np.argmax(score))
        best[j] = score[k] + weights[j]
        back[j] = lo + k
    chosen = [n - 1]
    while back[chosen[-1]] >= 0:
        chosen.append(int(back[chosen[-1]]))
    return np.array(chosen[::-1], dtype=np.int64)


def suppress_close(
    points: np.ndarray, nodes: np.ndarray, weights: np.ndarray, separation_A: float
) -> np.ndarray:
    """``nodes`` (indices into ``points``) less those closer than ``separation_A`` to a kept
    node of higher weight (ties: lower index first); sorted."""
    if len(nodes) < 2:
        return np.sort(nodes)
    order = nodes[np.argsort(-weights[nodes], kind="stable")]
    tree = cKDTree(points[order])
    keep = np.ones(len(order), dtype=bool)
    for k in range(len(order)):
        if keep[k]:
            close = np.asarray(tree.query_ball_point(points[order[k]], separation_A))
            keep[close[close > k]] = False
    return np.sort(order[keep])


def place_nodes(
    points: np.ndarray,
    adj: list[set[int]],
    alive: np.ndarray,
    weights: np.ndarray,
    *,
    spacing_A: float,
    curved_spacing_A: float,
    curvature: tuple[float, float],
    min_A: float,
    max_A: float,
    penalty: float,
    separation_A: float,
) -> np.ndarray:
    """Indices (into ``points`` ``(n, 3)`` Å) of the ridge points that become nodes: break
    points and isolated points, and each segment's :func:`segment_nodes`, then
    :func:`suppress_close`. ``adj``/``alive``: the pruned forest; ``weights`` ``(n,)``: the
    anchor weights; the preferred chord is ``spacing_A`` where the ridge's curvature is at
    most ``curvature[0]`` (1/Å), ``curved_spacing_A`` from ``curvature[1]``, linear
    between."""
    segments, breaks = forest_segments(adj, alive)
    chosen = set(np.flatnonzero(breaks).tolist())
    for segment in segments:
        index = np.asarray(segment, dtype=np.int64)
        kappa = ridge_curvature(points[index], CURVATURE_HALF_WINDOW_A)
        spacing = np.interp(kappa, curvature, (spacing_A, curved_spacing_A))
        picked = segment_nodes(
            points[index],
            weights[index],
            spacing_A=spacing,
            min_A=min_A,
            max_A=max_A,
            penalty=penalty,
        )
        chosen.update(index[picked].tolist())
    nodes = np.array(sorted(chosen), dtype=np.int64)
    return suppress_close(points, nodes, weights, separation_A)
