"""Density graphs: nodes at the local maxima of a continuous field, edges between near nodes.

The method (the study's, with its parameters as defaults):

1. Seeds: the field on a grid of spacing ``min(0.5 Å, voxel size)`` from the box origin; keep
   points with density ``>=`` the seed threshold (default ``max(0.1, mean + 3 std)`` of the
   normalised map).
2. Walk: every seed moves uphill along its normalised gradient in steps of 0.05 Å while the
   density increases (strictly); seeds move together in batches, the active set shrinking as
   seeds stop; a seed stops at a zero gradient, when a step would leave the box, or at the
   step cap (counted and reported).
3. Cluster the end points: DBSCAN with ``eps`` 0.2 Å and ``min_samples`` 1, computed exactly
   as the connected components of the graph joining points at most ``eps`` apart (that is
   what DBSCAN with ``min_samples=1`` computes), on a grid of cells so memory stays linear.
   Nodes at the cluster centroids.
4. Edges between nodes at most the adjacency distance apart (KD-tree); connected components
   smaller than ``min_num_nodes`` are dropped.

Node attributes: ``x``, ``y``, ``z`` (Å), ``density`` (normalised), ``gradient_norm``
(density per Å at the node); edge attribute ``length`` (Å). Works with any
:class:`~neural_em.fields.base.DensityField`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
from scipy.spatial import cKDTree

from neural_em.errors import InputError
from neural_em.fields.base import DensityField

logger = logging.getLogger(__name__)

#: Format name and version written into every graph's attributes and files.
GRAPH_FORMAT = "neural-em-density-graph"
GRAPH_FORMAT_VERSION = 1

#: Refinements of the node set (see :func:`neural_em.graph.refine.refine_nodes`).
REFINE_CHOICES = ("none", "ridge")


# ---------------------------------------------------------------------------- thresholds
def default_seed_threshold(field: DensityField) -> float:
    """The study's seed threshold: ``max(0.1, mean + 3 std)`` of the normalised map.

    Uses the field's normalisation record; a field without one is sampled on its own voxel
    grid to get the mean and standard deviation.
    """
    norm = field.normalisation
    if norm is not None:
        mean, std = norm.mean, norm.std
    else:
        vmap = field.to_voxel_density_map()
        mean = float(vmap.data.mean(dtype=np.float64))
        std = float(vmap.data.std(dtype=np.float64))
    return float(max(0.1, mean + 3.0 * std))


# ---------------------------------------------------------------------------- seeding
#: Most seeds a graph accepts by default (each costs ~70 bytes of walk state): a seed
#: threshold near zero on a large map is refused instead of exhausting memory.
DEFAULT_MAX_SEEDS = 20_000_000


def seed_points(field: DensityField, *, spacing_A: float, threshold: float,
                max_seeds: int = DEFAULT_MAX_SEEDS) -> tuple[np.ndarray, np.ndarray]:
    """Grid points of spacing ``spacing_A`` whose density is ``>= threshold``.

    Returns ``(points (n, 3) float64 Å, values (n, 4) float32)`` in grid (z, y, x) order.
    The grid is processed slab by slab (``field.iter_grid_densities``, densities only, then
    full values at the kept points), so memory grows with the seeds kept only; more than
    ``max_seeds`` raises :class:`InputError` naming the option.
    """
    kept_pts: list[np.ndarray] = []
    kept_vals: list[np.ndarray] = []
    total = 0
    for ax, ay, zs, dens in field.iter_grid_densities(spacing_A):
        iz, iy, ix = np.nonzero(dens >= threshold)  # NaN compares False
        n = len(iz)
        if n == 0:
            continue
        total += n
        if total > max_seeds:
            raise InputError(
                f"more than {max_seeds} seed points at density >= {threshold:g}: raise the "
                "seed threshold (--seed-threshold) or max_seeds")
        pts = np.stack([ax[ix], ay[iy], zs[iz]], axis=1)
        vals = field.get_values(pts)
        good = np.all(np.isfinite(vals), axis=1)
        kept_pts.append(pts[good])
        kept_vals.append(vals[good])
    if not kept_pts:
        return np.zeros((0, 3)), np.zeros((0, 4), dtype=np.float32)
    return np.concatenate(kept_pts), np.concatenate(kept_vals).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- walking
#: Points per field evaluation in the walk: small enough that a spline's 64-coefficient
#: gathers stay in cache (measured 1.7x faster than 65536-point chunks), large enough that
#: per-call overhead does not matter. Results do not depend on it.
WALK_CHUNK_POINTS = 4096


def _evaluate_chunked(field: DensityField, points: np.ndarray, pool: ThreadPoolExecutor | None,
                      chunk_points: int) -> np.ndarray:
    """``field.get_values`` in chunks (in threads when a pool is given); identical to one
    call."""
    if len(points) <= chunk_points:
        return field.get_values(points)
    pieces = [points[s:s + chunk_points] for s in range(0, len(points), chunk_points)]
    results = pool.map(field.get_values, pieces) if pool is not None else map(
        field.get_values, pieces)
    return np.concatenate(list(results))


def walk_uphill(field: DensityField, points: np.ndarray, values: np.ndarray, *,
                step_A: float = 0.05, max_steps: int = 400, batch_size: int = 1 << 17,
                threads: int = 1, chunk_points: int = WALK_CHUNK_POINTS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move every point uphill along its normalised gradient in fixed steps.

    points: ``(n, 3)`` Å; values: ``(n, 4)`` the field's values at them. A point takes the
    step ``p + step_A * g / |g|`` when the density there is strictly higher, else it stops; it
    also stops at a zero or non-finite gradient, outside the box, or after ``max_steps``.
    Points are walked ``batch_size`` at a time, only the still-moving ones evaluated, in
    chunks of ``chunk_points`` spread over ``threads`` threads (results do not depend on
    either).

    Returns ``(end points (n, 3) Å, steps taken (n,) int32, capped (n,) bool)``.
    """
    n = len(points)
    ends = np.array(points, dtype=np.float64, copy=True)
    steps = np.zeros(n, dtype=np.int32)
    capped = np.zeros(n, dtype=bool)
    if n == 0:
        return ends, steps, capped
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            pos = ends[idx]
            dens = np.asarray(values[idx, 0], dtype=np.float32)
            grad = np.asarray(values[idx, 1:], dtype=np.float64)
            for step in range(1, max_steps + 1):
                norm = np.sqrt(np.einsum("ij,ij->i", grad, grad))
                ok = np.isfinite(norm) & (norm > 0)
                if not ok.all():
                    idx, pos, dens, grad, norm = idx[ok], pos[ok], dens[ok], grad[ok], norm[ok]
                if len(idx) == 0:
                    break
                trial = pos + grad * (step_A / norm)[:, None]
                new = _evaluate_chunked(field, trial, pool, chunk_points)
                up = new[:, 0] > dens  # NaN (outside the box) compares False
                idx, pos, dens = idx[up], trial[up], new[up, 0]
                grad = new[up, 1:].astype(np.float64)
                ends[idx] = pos
                steps[idx] = step
            else:
                # Still moving (uphill with a usable gradient) after max_steps: capped.
                norm = np.sqrt(np.einsum("ij,ij->i", grad, grad))
                capped[idx[np.isfinite(norm) & (norm > 0)]] = True
    finally:
        if pool is not None:
            pool.shutdown()
    return ends, steps, capped


# ---------------------------------------------------------------------------- clustering
def _pack_keys(cells: np.ndarray, dims: np.ndarray) -> np.ndarray:
    return (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]


def _pairs_within(points: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                  pa: np.ndarray, pb: np.ndarray, eps: float, budget: int) -> np.ndarray:
    """For cell pairs ``(pa[i], pb[i])``: does any point of one lie within ``eps`` of the
    other's? Points are sorted by cell (``starts``/``counts``). Exact; chunked by ``budget``
    point pairs; a single pair larger than the budget uses a KD-tree."""
    result = np.zeros(len(pa), dtype=bool)
    sizes = counts[pa].astype(np.int64) * counts[pb]
    eps2 = eps * eps
    big = np.flatnonzero(sizes > budget)
    for i in big:
        a = points[starts[pa[i]]:starts[pa[i]] + counts[pa[i]]]
        b = points[starts[pb[i]]:starts[pb[i]] + counts[pb[i]]]
        dist, _ = cKDTree(b).query(a, k=1, distance_upper_bound=eps * (1 + 1e-9))
        result[i] = bool(np.any(dist <= eps))
    small = np.flatnonzero(sizes <= budget)
    if len(small) == 0:
        return result
    csum = np.cumsum(sizes[small])
    chunk_ends = np.searchsorted(csum, np.arange(budget, csum[-1] + budget, budget), "right")
    lo = 0
    for hi in np.unique(np.append(chunk_ends, len(small))):
        if hi <= lo:
            continue
        sel = small[lo:hi]
        sz = sizes[sel]
        total = int(sz.sum())
        pair = np.repeat(np.arange(len(sel)), sz)
        offs = np.arange(total) - np.repeat(np.cumsum(sz) - sz, sz)
        nb = counts[pb[sel]][pair]
        ia = starts[pa[sel]][pair] + offs // nb
        ib = starts[pb[sel]][pair] + offs % nb
        close = np.sum((points[ia] - points[ib]) ** 2, axis=1) <= eps2
        result[sel] = np.bincount(pair, weights=close, minlength=len(sel)) > 0
        lo = hi
    return result


def cluster_points(points: np.ndarray, eps_A: float = 0.2, *, pair_budget: int = 1 << 22
                   ) -> np.ndarray:
    """Single-linkage clusters at ``eps_A``: exactly DBSCAN(eps, min_samples=1) labels.

    points: ``(n, 3)`` Å. Two points share a label when a chain of points each at most
    ``eps_A`` from the next joins them. Computed on cells of side ``eps/√3`` (points in one
    cell are always joined), then exact point checks only between neighbouring cells not yet
    joined, in chunks of at most ``pair_budget`` distances. Labels are ``0..k-1`` in order of
    each cluster's first point. Returns ``(n,)`` int64.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(pts)):
        raise InputError("points to cluster must be finite")
    eps = float(eps_A)
    if not eps > 0:
        raise InputError(f"cluster distance must be positive, got {eps_A!r}")
    side = eps / math.sqrt(3.0) * (1.0 - 1e-9)  # any two points in one cell are < eps apart
    cells = np.floor((pts - pts.min(axis=0)) / side).astype(np.int64) + 2
    dims = cells.max(axis=0) + 3
    keys = _pack_keys(cells, dims)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    ukeys, starts, counts = np.unique(skeys, return_index=True, return_counts=True)
    m = len(ukeys)
    cell_of_sorted = np.repeat(np.arange(m), counts)
    spts = pts[order]
    ucells = cells[order[starts]]
    # Candidate neighbour cells: offsets in {-2..2}^3, half of them (the other half by symmetry),
    # whose closest possible distance is within eps.
    offsets = [(i, j, k) for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)
               if (i, j, k) > (0, 0, 0)]
    pa_list, pb_list = [], []
    for off in offsets:
        gap = np.maximum(np.abs(off) - 1, 0) * side
        if float(np.sum(gap**2)) > eps * eps:
            continue
        nkeys = _pack_keys(ucells + np.array(off), dims)
        idx = np.searchsorted(ukeys, nkeys)
        idx[idx >= m] = m - 1
        found = ukeys[idx] == nkeys
        pa_list.append(np.flatnonzero(found))
        pb_list.append(idx[found])
    pa = np.concatenate(pa_list) if pa_list else np.zeros(0, dtype=np.int64)
    pb = np.concatenate(pb_list) if pb_list else np.zeros(0, dtype=np.int64)
    # Reject pairs whose boxes are too far apart; accept those whose first points are close.
    lo = np.minimum.reduceat(spts, starts, axis=0)
    hi = np.maximum.reduceat(spts, starts, axis=0)
    gap = np.maximum(0.0, np.maximum(lo[pa] - hi[pb], lo[pb] - hi[pa]))
    possible = np.sum(gap**2, axis=1) <= eps * eps
    pa, pb = pa[possible], pb[possible]
    rep = spts[starts]
    accepted = np.sum((rep[pa] - rep[pb]) ** 2, axis=1) <= eps * eps
    comp = _components(m, pa[accepted], pb[accepted])
    undecided = ~accepted & (comp[pa] != comp[pb])
    if undecided.any():
        ua, ub = pa[undecided], pb[undecided]
        close = _pairs_within(spts, starts, counts, ua, ub, eps, pair_budget)
        comp = _components(m, np.concatenate([pa[accepted], ua[close]]),
                           np.concatenate([pb[accepted], ub[close]]))
    labels = np.empty(n, dtype=np.int64)
    labels[order] = comp[cell_of_sorted]
    return _canonical_labels(labels)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = scipy.sparse.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel so clusters are numbered in order of their first member."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


def cluster_centroids(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean position ``(k, 3)`` of each cluster ``0..k-1``."""
    k = int(labels.max()) + 1 if len(labels) else 0
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.stack([np.bincount(labels, weights=points[:, d], minlength=k) for d in range(3)],
                    axis=1) / counts[:, None]


# ---------------------------------------------------------------------------- edges
def radius_edges(points: np.ndarray, max_distance_A: float) -> np.ndarray:
    """Pairs ``(m, 2)`` int64, ``i < j``, sorted, of points at most ``max_distance_A`` apart
    (KD-tree; never a dense distance matrix)."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = cKDTree(pts).query_pairs(float(max_distance_A), output_type="ndarray")
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].reshape(-1, 2)


def small_component_mask(n: int, edges: np.ndarray, min_nodes: int) -> np.ndarray:
    """Boolean ``(n,)``: nodes in connected components of at least ``min_nodes`` nodes."""
    if n == 0:
        return np.zeros(0, dtype=bool)
    comp = _components(n, edges[:, 0], edges[:, 1])
    sizes = np.bincount(comp)
    return sizes[comp] >= min_nodes


# ---------------------------------------------------------------------------- the graph
def field_from_map(path: str | os.PathLike, kind: str = "spline", *,
                   contour: float | None = None, devices: Sequence[str] = ("cpu",),
                   preset: str = "fast", max_voxels: int | None = None,
                   field_options: dict[str, Any] | None = None) -> DensityField:
    """Read a map and fit the field a graph is drawn from: ``"spline"`` or ``"neural"``.

    ``contour``: raw density level to crop the map to (with a margin) before fitting;
    ``devices``/``preset``/``field_options``: passed to the neural fit. The field's
    ``max_voxels`` is set, so the same limit bounds the graph's seed grid.
    """
    kind = str(kind)
    if kind == "spline":
        from neural_em.fields.spline import SplineDensityMap

        fld: DensityField = SplineDensityMap.from_voxel_map(path, contour,
                                                            max_voxels=max_voxels)
    elif kind == "neural":
        try:
            from neural_em.fields.neural import NeuralDensityMap
        except ImportError as exc:
            raise InputError("the neural field is not available in this build") from exc
        fld = NeuralDensityMap.from_voxel_map(path, contour, devices=tuple(devices),
                                              preset=preset, max_voxels=max_voxels,
                                              **(field_options or {}))
    else:
        raise InputError(f"field must be 'spline' or 'neural', got {kind!r}")
    fld.max_voxels = max_voxels
    return fld


class DensityGraph:
    """A density graph: ``graph`` is a :class:`networkx.Graph` with node attributes ``x``,
    ``y``, ``z`` (Å), ``density``, ``gradient_norm`` and edge attribute ``length`` (Å); its
    graph attributes record the map id and the parameters. ``timings`` holds seconds per step
    (``seeding``, ``walking``, ``clustering``, ``refine``, ``edges``, ``total``); ``stats``
    counts (seeds, capped walks, clusters, nodes, edges).
    """

    def __init__(self, graph: nx.Graph, *, timings: dict[str, float] | None = None,
                 stats: dict[str, Any] | None = None) -> None:
        if not isinstance(graph, nx.Graph) or graph.is_directed() or graph.is_multigraph():
            raise InputError("a density graph must be an undirected networkx.Graph")
        self.graph = graph
        self.timings: dict[str, float] = dict(timings or {})
        self.stats: dict[str, Any] = dict(stats or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, positions: np.ndarray, densities: np.ndarray,
                    gradient_norms: np.ndarray | None, edges: np.ndarray, *,
                    attrs: dict[str, Any] | None = None, **kwargs: Any) -> DensityGraph:
        """Build from node positions ``(n, 3)`` Å, densities ``(n,)``, gradient norms ``(n,)``
        and edges ``(m, 2)`` (node indices); edge lengths are computed."""
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        dens = np.asarray(densities, dtype=np.float64).reshape(-1)
        gnorm = (np.full(len(pos), np.nan) if gradient_norms is None
                 else np.asarray(gradient_norms, dtype=np.float64).reshape(-1))
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        graph = nx.Graph(**(attrs or {}))
        graph.add_nodes_from(
            (i, {"x": float(p[0]), "y": float(p[1]), "z": float(p[2]), "density": float(d),
                 "gradient_norm": float(g)})
            for i, (p, d, g) in enumerate(zip(pos, dens, gnorm, strict=True)))
        lengths = np.linalg.norm(pos[e[:, 1]] - pos[e[:, 0]], axis=1) if len(e) else []
        graph.add_edges_from((int(a), int(b), {"length": float(d)})
                             for (a, b), d in zip(e, lengths, strict=True))
        return cls(graph, **kwargs)

    @classmethod
    def from_neural_density_map(
        cls,
        field: DensityField,
        seed_threshold: float | None = None,
        adjacency_threshold: float = 4.0,
        min_num_nodes: int = 10,
        devices: Sequence[str] | None = None,
        *,
        seed_spacing_A: float | None = None,
        step_A: float = 0.05,
        max_steps: int = 400,
        cluster_eps_A: float = 0.2,
        batch_size: int = 1 << 17,
        threads: int | None = None,
        max_seeds: int = DEFAULT_MAX_SEEDS,
        refine: str | None = None,
        resolution_A: float | None = None,
        source: str = "",
    ) -> DensityGraph:
        """Build the density graph of any field with the shared query interface.

        ``seed_threshold``: normalised density (default :func:`default_seed_threshold`);
        ``adjacency_threshold``: Å (the study's experiments used 2 × resolution);
        ``min_num_nodes``: smallest connected component kept; ``devices``: passed to fields
        that can move (``field.to_devices``), ignored by others; ``seed_spacing_A``: default
        ``min(0.5, voxel size)``; ``threads``: parallel field evaluations (default: 2 for the
        numpy spline, 1 for other fields, which parallelise themselves); ``max_seeds``:
        refuse more seeds than this (memory bound); ``refine``:
        ``None``/``"none"`` (the study's method) or ``"ridge"`` (drop detached satellites,
        see :mod:`neural_em.graph.refine`).
        """
        if not isinstance(field, DensityField):
            raise InputError(f"field must be a DensityField, got {type(field).__name__}")
        adjacency = _positive(adjacency_threshold, "adjacency_threshold")
        step = _positive(step_A, "step_A")
        eps = _positive(cluster_eps_A, "cluster_eps_A")
        if int(min_num_nodes) < 1:
            raise InputError(f"min_num_nodes must be at least 1, got {min_num_nodes!r}")
        if int(max_steps) < 1:
            raise InputError(f"max_steps must be at least 1, got {max_steps!r}")
        refine = "none" if refine is None else str(refine)
        if refine not in REFINE_CHOICES:
            raise InputError(f"refine must be one of {REFINE_CHOICES}, got {refine!r}")
        if devices is not None and hasattr(field, "to_devices"):
            field.to_devices(devices)
        spacing = (float(min(0.5, float(np.min(field.voxel_size)))) if seed_spacing_A is None
                   else _positive(seed_spacing_A, "seed_spacing_A"))
        threshold = (default_seed_threshold(field) if seed_threshold is None
                     else float(seed_threshold))
        if not np.isfinite(threshold):
            raise InputError(f"seed_threshold must be finite, got {seed_threshold!r}")
        if threads is None:
            threads = min(2, os.cpu_count() or 1) if field.kind in ("spline",) else 1
        timings: dict[str, float] = {}
        t_total = t0 = time.perf_counter()

        seeds, values = seed_points(field, spacing_A=spacing, threshold=threshold,
                                    max_seeds=int(max_seeds))
        timings["seeding"] = time.perf_counter() - t0
        logger.info("%d seeds at density >= %.4g on a %.3g Å grid", len(seeds), threshold,
                    spacing)

        t0 = time.perf_counter()
        # Small chunks keep a spline's coefficient gathers in cache; other fields (torch)
        # prefer their own, larger batches.
        chunk = WALK_CHUNK_POINTS if field.kind == "spline" else max(1, field.chunk_points)
        ends, steps, capped = walk_uphill(field, seeds, values, step_A=step,
                                          max_steps=int(max_steps), batch_size=int(batch_size),
                                          threads=int(threads), chunk_points=chunk)
        del values
        timings["walking"] = time.perf_counter() - t0
        n_capped = int(capped.sum())
        if n_capped:
            logger.warning("%d of %d seeds hit the cap of %d steps", n_capped, len(seeds),
                           max_steps)

        t0 = time.perf_counter()
        labels = cluster_points(ends, eps)
        centroids = cluster_centroids(ends, labels)
        node_values = field.get_values(centroids) if len(centroids) else np.zeros((0, 4))
        timings["clustering"] = time.perf_counter() - t0
        n_clusters = len(centroids)

        t0 = time.perf_counter()
        refine_stats: dict[str, Any] = {}
        if refine != "none" and len(centroids):
            from neural_em.graph.refine import refine_nodes

            keep, refine_stats = refine_nodes(field, centroids, node_values, method=refine,
                                              threshold=threshold, resolution_A=resolution_A)
            centroids, node_values = centroids[keep], node_values[keep]
        timings["refine"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        edges = radius_edges(centroids, adjacency)
        keep = small_component_mask(len(centroids), edges, int(min_num_nodes))
        new_index = np.cumsum(keep) - 1
        edges = edges[keep[edges[:, 0]] & keep[edges[:, 1]]]
        edges = new_index[edges]
        centroids, node_values = centroids[keep], node_values[keep]
        timings["edges"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_total

        attrs = {
            "format": GRAPH_FORMAT,
            "format_version": GRAPH_FORMAT_VERSION,
            "method": "study",
            "map_id": field.map_id,
            "field_kind": field.kind,
            "source": source,
            "seed_threshold": threshold,
            "seed_spacing_A": spacing,
            "step_A": step,
            "max_steps": int(max_steps),
            "cluster_eps_A": eps,
            "adjacency_A": adjacency,
            "min_num_nodes": int(min_num_nodes),
            "refine": refine,
            "resolution_A": None if resolution_A is None else float(resolution_A),
            "voxel_size": [float(v) for v in field.voxel_size],
            "origin": [float(v) for v in field.origin],
            "shape_xyz": [int(v) for v in field.shape_xyz],
        }
        stats = {
            "seeds": int(len(seeds)),
            "capped": n_capped,
            "steps_total": int(steps.sum()),
            "steps_max": int(steps.max()) if len(steps) else 0,
            "clusters": int(n_clusters),
            "nodes": int(len(centroids)),
            "edges": int(len(edges)),
            **refine_stats,
        }
        gnorm = np.linalg.norm(node_values[:, 1:].astype(np.float64), axis=1)
        graph = cls.from_arrays(centroids, node_values[:, 0], gnorm, edges, attrs=attrs,
                                timings=timings, stats=stats)
        logger.info("density graph: %d nodes, %d edges (%d clusters, %d seeds) in %.2f s",
                    len(centroids), len(edges), n_clusters, len(seeds), timings["total"])
        return graph

    #: The same as :meth:`from_neural_density_map`: any field works.
    from_field = from_neural_density_map

    @classmethod
    def from_voxel_density_map(
        cls,
        path: str | os.PathLike,
        field: str = "spline",
        *,
        contour: float | None = None,
        devices: Sequence[str] = ("cpu",),
        preset: str = "fast",
        max_voxels: int | None = None,
        field_options: dict[str, Any] | None = None,
        **graph_options: Any,
    ) -> DensityGraph:
        """Read a map, fit a field (``"spline"`` or ``"neural"``) and build its graph.

        ``contour``: raw density level to crop the map to (with a margin) before fitting;
        ``devices``/``preset``/``field_options``: passed to the neural fit;
        ``graph_options``: passed to :meth:`from_neural_density_map`.
        """
        kind = str(field)
        t0 = time.perf_counter()
        fld = field_from_map(path, kind, contour=contour, devices=devices, preset=preset,
                             max_voxels=max_voxels, field_options=field_options)
        fit_seconds = time.perf_counter() - t0
        graph_options.setdefault("source", os.fspath(path))
        graph = cls.from_neural_density_map(fld, devices=None if kind == "spline" else devices,
                                            **graph_options)
        graph.timings["field"] = fit_seconds
        if contour is not None:
            graph.graph.graph["contour"] = float(contour)
        return graph

    # ------------------------------------------------------------------ views
    @property
    def map_id(self) -> str:
        return str(self.graph.graph.get("map_id", ""))

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def node_ids(self) -> list[Any]:
        """Node identifiers in array order (``0..n-1`` for graphs built here)."""
        return sorted(self.graph.nodes, key=_node_sort_key)

    @property
    def positions(self) -> np.ndarray:
        """Node positions ``(n, 3)`` Å in :attr:`node_ids` order."""
        nodes = self.graph.nodes
        return np.array([[nodes[i]["x"], nodes[i]["y"], nodes[i]["z"]] for i in self.node_ids],
                        dtype=np.float64).reshape(-1, 3)

    @property
    def densities(self) -> np.ndarray:
        """Node densities ``(n,)`` (normalised)."""
        nodes = self.graph.nodes
        return np.array([nodes[i].get("density", np.nan) for i in self.node_ids],
                        dtype=np.float64)

    @property
    def gradient_norms(self) -> np.ndarray:
        """Gradient norm ``(n,)`` at the nodes, density per Å (NaN where unknown)."""
        nodes = self.graph.nodes
        return np.array([nodes[i].get("gradient_norm", np.nan) for i in self.node_ids],
                        dtype=np.float64)

    @property
    def edge_index(self) -> np.ndarray:
        """Edges ``(2, m)`` int64 as positions in :attr:`node_ids` order, ``i < j``, sorted."""
        index = {node: k for k, node in enumerate(self.node_ids)}
        pairs = np.array([sorted((index[a], index[b])) for a, b in self.graph.edges],
                         dtype=np.int64).reshape(-1, 2)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        return pairs.T.copy()

    @property
    def edge_lengths(self) -> np.ndarray:
        """Edge lengths ``(m,)`` Å in :attr:`edge_index` order."""
        ids = self.node_ids
        ei = self.edge_index
        return np.array([self.graph.edges[ids[a], ids[b]].get("length", np.nan)
                         for a, b in ei.T], dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Counts, parameters and timings as a JSON-able dict."""
        return {"map_id": self.map_id, "nodes": len(self),
                "edges": self.graph.number_of_edges(), "timings": dict(self.timings),
                "stats": dict(self.stats), "parameters": dict(self.graph.graph)}

    def __repr__(self) -> str:
        return (f"DensityGraph(map_id={self.map_id!r}, nodes={len(self)}, "
                f"edges={self.graph.number_of_edges()})")

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the graph as node-link JSON (see :mod:`neural_em.graph.export`)."""
        from neural_em.graph.export import save_json

        return save_json(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DensityGraph:
        """Read a node-link JSON graph written by :meth:`save` (validated, no code run)."""
        from neural_em.graph.export import load_json

        return load_json(path)

    def save_as_mmcif(self, path: str | os.PathLike, include_bonds: bool = True, *,
                      overwrite: bool = False) -> Path:
        """One pseudo-atom per node (own residue), density as B-factor, edges as struct_conn."""
        from neural_em.graph.export import save_mmcif

        return save_mmcif(self, path, include_bonds=include_bonds, overwrite=overwrite)

    def save_as_graphml(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        from neural_em.graph.export import save_graphml

        return save_graphml(self, path, overwrite=overwrite)

    def save_as_npz(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Arrays for graph learning: positions, features, edge_index, edge lengths."""
        from neural_em.graph.export import save_npz

        return save_npz(self, path, overwrite=overwrite)


def _node_sort_key(node: Any) -> tuple[int, Any]:
    return (0, node) if isinstance(node, int) else (1, str(node))


def _positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a positive number, got {value!r}") from exc
    if not (np.isfinite(v) and v > 0):
        raise InputError(f"{name} must be a positive number, got {value!r}")
    return v
