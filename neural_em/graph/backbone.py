"""Backbone graphs: about one node per residue on the density's backbone, edges along the chain.

No training; works with any :class:`~neural_em.fields.base.DensityField`. The method:

1. **Ridge points.** On a grid of ``ridge_spacing_A`` (0.5 Å), every point with density
   ``>=`` the threshold takes a Newton step in the plane of the two most negative
   eigenvectors of the field's Hessian (analytic for the spline, central differences of the
   gradient for other fields): that plane is normal to a 1-D density ridge, and backbone
   density is a tube whose ridge carries the C-alpha trace. Points that start within
   ``ridge_capture_A`` of a ridge (both normal eigenvalues negative) are kept and projected
   ``ridge_iterations`` more times.
2. **Backbone score.** The field on its own voxel grid, blurred with a Gaussian of
   ``score_sigma_A`` (1.5 Å): this local mass separates backbone from side-chain and noise
   ridges. A ridge point is kept when its score is ``>= score_fraction`` (0.6) of the highest
   score within ``score_radius_A`` (5 Å): a local threshold, so weak domains keep their
   backbone.
3. **Ridge forest** (:mod:`neural_em.graph.forest`). Ridge points are merged on
   ``merge_A`` cells (0.3 Å), joined by the minimum spanning forest of the pairs closer than
   ``link_A`` (2.5 Å, which bridges the short breaks of a ridge), and side-chain stubs are
   pruned: terminal branches shorter than ``prune_A`` (3 Å), then those shorter than
   ``prune_weak_A`` (5 Å) whose mean score is below ``prune_weak_ratio`` (1.0) of the score
   at their junction, never all but one branch of a junction (a chain's fading end keeps its
   last stretch).
4. **Nodes at residue spacing** (:mod:`neural_em.graph.placement`). Junctions of the forest
   before pruning, where side chains leave the backbone, mark C-alphas; each unbranched
   segment gets the nodes that best balance closeness to a junction (``anchor_sigma_A``,
   ``anchor_weight``) against a chord of ``node_spacing_A`` (3.6 Å) on a straight ridge and
   ``curved_spacing_A`` (3.0 Å) where the ridge winds through a helix and cuts its corners
   (curvature from ``curvature_straight`` to ``curvature_curved`` per Å), every chord within
   ``[node_min_A, node_max_A]``; nodes closer than ``node_separation_A`` to one with a
   stronger anchor are dropped.
5. **Edges along the chain.** Each ridge point belongs to its nearest node along the forest
   (geodesic Voronoi cells); two nodes are joined when their cells touch. Degree is mostly 2;
   branch points remain where the ridge branches. Path ends are then bridged to the nearest
   node of another piece within ``bridge_A`` (4.6 Å) when the density along the segment stays
   ``>= bridge_fraction`` of the seed threshold.
6. Connected components smaller than ``min_num_nodes`` are dropped.

Node attributes as for every density graph (``x``, ``y``, ``z`` Å, ``density``,
``gradient_norm``) plus ``score`` (the blurred backbone score); graph attribute
``method = "backbone"`` and the parameters.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import scipy.ndimage
import scipy.sparse
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from neural_em.errors import InputError
from neural_em.fields.base import DensityField, VolumeField
from neural_em.graph.density_graph import DensityGraph, assemble_graph
from neural_em.graph.forest import merge_points, neighbours_of, prune_stubs, ridge_forest
from neural_em.graph.placement import anchor_weights, place_nodes
from neural_em.graph.seeds import default_seed_threshold, seed_points, small_component_mask

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackboneParameters:
    """Parameters of the backbone method (lengths in Å; see the module docstring).

    ``threshold_fraction``: ridge points down to this fraction of the seed threshold, kept
    where their tree reaches the threshold (hysteresis; 1: off); ``score_floor``: also drop
    ridge points whose score is below this fraction of the box's highest score (0: off);
    ``anchor_weight``: 0 places nodes by spacing alone; ``spacing_penalty``: per Å^2 of chord
    deviation from ``node_spacing_A``, in units of the anchor weight.
    """

    threshold_fraction: float = 1.0
    ridge_spacing_A: float = 0.5
    ridge_capture_A: float = 0.25
    ridge_iterations: int = 3
    score_sigma_A: float = 1.5
    score_radius_A: float = 5.0
    score_fraction: float = 0.6
    score_floor: float = 0.0
    merge_A: float = 0.3
    link_A: float = 2.5
    prune_A: float = 3.0
    prune_weak_A: float = 5.0
    prune_weak_ratio: float = 1.0
    anchor_sigma_A: float = 0.7
    anchor_weight: float = 1.0
    node_spacing_A: float = 3.6
    curved_spacing_A: float = 3.0
    curvature_straight: float = 0.15
    curvature_curved: float = 0.3
    node_min_A: float = 2.0
    node_max_A: float = 4.6
    node_separation_A: float = 2.0
    spacing_penalty: float = 1.0
    bridge_A: float = 4.6
    bridge_fraction: float = 0.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "ridge_iterations":
                if not isinstance(value, (int, np.integer)) or value < 0:
                    raise InputError(f"{f.name} must be a non-negative integer, got {value!r}")
                continue
            if not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise InputError(f"{f.name} must be a finite number, got {value!r}")
            if f.name in _FRACTIONS:
                if not 0.0 <= value <= 1.0:
                    raise InputError(f"{f.name} must lie in [0, 1], got {value!r}")
            elif f.name in ("anchor_weight", "spacing_penalty"):
                if value < 0:
                    raise InputError(f"{f.name} must not be negative, got {value!r}")
            elif value <= 0:
                raise InputError(f"{f.name} must be positive, got {value!r}")
        for name in ("node_spacing_A", "curved_spacing_A"):
            if not self.node_min_A <= getattr(self, name) <= self.node_max_A:
                raise InputError(
                    f"{name} must lie between node_min_A and node_max_A, got "
                    f"{getattr(self, name)!r} outside [{self.node_min_A!r}, {self.node_max_A!r}]"
                )
        if self.curvature_straight >= self.curvature_curved:
            raise InputError(
                "curvature_straight must be below curvature_curved, got "
                f"{self.curvature_straight!r} and {self.curvature_curved!r}"
            )


_FRACTIONS = ("score_fraction", "bridge_fraction", "score_floor", "prune_weak_ratio")


# ---------------------------------------------------------------------------- 1. ridges
def _normal_step(hessians: np.ndarray, gradients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton step ``(n, 3)`` Å onto the ridge within the plane of the two most negative
    Hessian eigenvectors, and whether both of their eigenvalues are negative ``(n,)``."""
    lam, vec = np.linalg.eigh(hessians)  # ascending eigenvalues
    normal = vec[:, :, :2]
    g_normal = np.einsum("nij,ni->nj", normal, gradients)
    ok = (lam[:, 0] < 0) & (lam[:, 1] < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.where(ok[:, None], -g_normal / lam[:, :2], np.nan)
    return np.einsum("nij,nj->ni", normal, coef), ok


def ridge_points(
    field: DensityField,
    *,
    threshold: float,
    spacing_A: float = 0.5,
    capture_A: float = 0.25,
    iterations: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on the 1-D density ridges of ``field`` at density ``>= threshold``.

    Returns ``(points (n, 3) float64 Å, values (n, 4) float32)`` (density and gradient per
    Å at the points). See step 1 of the module docstring.
    """
    seeds, values = seed_points(field, spacing_A=spacing_A, threshold=threshold)
    if len(seeds) == 0:
        return seeds, values
    step, ok = _normal_step(field.get_hessians(seeds), values[:, 1:].astype(np.float64))
    keep = ok & (np.linalg.norm(step, axis=1) <= capture_A)
    points = seeds[keep] + step[keep]
    for _ in range(int(iterations)):
        vals = field.get_values(points)
        good = np.all(np.isfinite(vals), axis=1)
        points, vals = points[good], vals[good]
        step, ok = _normal_step(field.get_hessians(points), vals[:, 1:].astype(np.float64))
        # A point that has to move far, or whose plane lost its ridge, was not on one.
        good = ok & (np.linalg.norm(step, axis=1) <= 2.0 * capture_A)
        points = points[good] + step[good]
    vals = field.get_values(points)
    good = np.all(np.isfinite(vals), axis=1) & (vals[:, 0] >= threshold)
    return points[good], vals[good]


# ---------------------------------------------------------------------------- 2. score
def backbone_score(
    field: DensityField, points: np.ndarray, *, sigma_A: float = 1.5, radius_A: float = 5.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """The blurred density at ``points`` ``(n, 3)`` Å, the highest blurred density within
    ``radius_A`` of each, both ``(n,)``, and the highest in the box: the field sampled on its own voxel grid, blurred with
    a Gaussian of ``sigma_A`` (zero outside the box)."""
    if isinstance(field, VolumeField):  # the field interpolates its volume: no resampling
        data, vs, origin = field.volume, field.voxel_size, field.origin
    else:
        vmap = field.to_voxel_density_map()
        data, vs, origin = vmap.data, np.asarray(vmap.voxel_size, np.float64), vmap.origin
    data = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0)
    blurred = scipy.ndimage.gaussian_filter(data, sigma=(sigma_A / vs)[::-1], mode="constant")
    idx = ((np.asarray(points, dtype=np.float64) - origin) / vs)[:, ::-1]
    score = scipy.ndimage.map_coordinates(blurred, idx.T, order=1, mode="nearest")
    best = ball_maximum(blurred, radius_A / vs, idx)
    return score, best, float(blurred.max())


def _ball(radius_xyz: np.ndarray) -> np.ndarray:
    half = np.floor(radius_xyz).astype(int)
    zz, yy, xx = np.mgrid[-half[2] : half[2] + 1, -half[1] : half[1] + 1, -half[0] : half[0] + 1]
    r = np.maximum(radius_xyz, 1e-9)
    return (xx / r[0]) ** 2 + (yy / r[1]) ** 2 + (zz / r[2]) ** 2 <= 1.0


def ball_maximum(
    data: np.ndarray, radius_xyz: np.ndarray, centres: np.ndarray, *, chunk: int = 4096
) -> np.ndarray:
    """Maximum of ``data`` ``(nz, ny, nx)`` over the voxels within a ball of radius
    ``radius_xyz`` (voxels along x, y, z) of each of ``centres`` ``(n, 3)`` (voxel indices
    z, y, x, rounded); outside the box counts as lower. Cost grows with the centres, not the
    box (a filter over a 240^3 box with a 6-voxel ball takes seconds)."""
    offsets = (
        np.argwhere(_ball(np.asarray(radius_xyz, dtype=np.float64)))
        - np.floor(np.asarray(radius_xyz, dtype=np.float64)).astype(int)[::-1]
    )
    padded = np.pad(
        data,
        [(int(abs(offsets[:, k]).max()),) * 2 for k in range(3)],
        mode="constant",
        constant_values=-np.inf,
    )
    pad = np.array([int(abs(offsets[:, k]).max()) for k in range(3)])
    strides = np.array([padded.shape[1] * padded.shape[2], padded.shape[2], 1])
    flat_offsets = offsets @ strides
    flat = padded.ravel()
    base = (np.clip(np.rint(centres).astype(np.int64), 0, np.array(data.shape) - 1) + pad) @ strides
    out = np.empty(len(base), dtype=data.dtype)
    for start in range(0, len(base), chunk):
        idx = base[start : start + chunk, None] + flat_offsets[None, :]
        out[start : start + chunk] = flat[idx].max(axis=1)
    return out


# ---------------------------------------------------------------------------- 5. edges
def forest_edges(points: np.ndarray, adj: list[set[int]], nodes: np.ndarray) -> np.ndarray:
    """Edges ``(m, 2)`` (positions in ``nodes``, ``i < j``, sorted) between nodes whose
    geodesic Voronoi cells on the forest touch."""
    n = len(points)
    rows = [v for v in range(n) for u in adj[v] if u > v]
    cols = [u for v in range(n) for u in adj[v] if u > v]
    if not rows or len(nodes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    rows_a, cols_a = np.array(rows), np.array(cols)
    lengths = np.linalg.norm(points[rows_a] - points[cols_a], axis=1) + 1e-9
    graph = scipy.sparse.coo_matrix((lengths, (rows_a, cols_a)), shape=(n, n)).tocsr()
    _, _, source = dijkstra(
        graph, directed=False, indices=nodes, min_only=True, return_predecessors=True
    )
    position = np.full(n, -1, dtype=np.int64)
    position[nodes] = np.arange(len(nodes))
    a, b = source[rows_a], source[cols_a]
    touch = (a >= 0) & (b >= 0) & (a != b)
    pairs = np.sort(np.stack([position[a[touch]], position[b[touch]]], axis=1), axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    return pairs.astype(np.int64)


def bridge_gaps(
    positions: np.ndarray,
    edges: np.ndarray,
    field: DensityField,
    *,
    max_gap_A: float,
    min_density: float,
    min_gap_A: float = 2.4,
    samples: int = 7,
) -> np.ndarray:
    """Join path ends (degree <= 1) to a node of degree <= 1 of another piece within
    ``max_gap_A`` when the field stays ``>= min_density`` along the segment (``samples``
    interior points); shortest gaps first, never closing a cycle. Returns all edges."""
    n = len(positions)
    if n < 2:
        return edges
    degree = np.bincount(edges.ravel(), minlength=n)
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)
    )
    _, label = connected_components(adjacency, directed=False)
    ends = np.flatnonzero(degree <= 1)
    if len(ends) < 2:
        return edges
    tree = cKDTree(positions[ends])
    pairs = tree.query_pairs(max_gap_A, output_type="ndarray")
    if len(pairs) == 0:
        return edges
    a, b = ends[pairs[:, 0]], ends[pairs[:, 1]]
    gap = np.linalg.norm(positions[a] - positions[b], axis=1)
    keep = (label[a] != label[b]) & (gap >= min_gap_A)
    a, b, gap = a[keep], b[keep], gap[keep]
    t = np.linspace(0.0, 1.0, samples + 2)[1:-1]
    segment = positions[a][:, None] + t[None, :, None] * (positions[b] - positions[a])[:, None]
    dens = field.get_densities(segment.reshape(-1, 3)).reshape(len(a), samples)
    ok = np.all(np.nan_to_num(dens, nan=-np.inf) >= min_density, axis=1)
    parent = np.arange(label.max() + 1 if n else 0)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    added = []
    for k in np.flatnonzero(ok)[np.argsort(gap[ok], kind="stable")]:
        i, j = int(a[k]), int(b[k])
        if degree[i] > 1 or degree[j] > 1:
            continue
        ri, rj = find(label[i]), find(label[j])
        if ri == rj:
            continue
        parent[ri] = rj
        degree[i] += 1
        degree[j] += 1
        added.append((min(i, j), max(i, j)))
    if not added:
        return edges
    out = np.concatenate([edges, np.array(added, dtype=np.int64)])
    return np.unique(out, axis=0)


# ---------------------------------------------------------------------------- the graph
def backbone_graph(
    field: DensityField,
    *,
    seed_threshold: float | None = None,
    min_num_nodes: int = 1,
    resolution_A: float | None = None,
    parameters: BackboneParameters | None = None,
    source: str = "",
    **overrides: Any,
) -> DensityGraph:
    """The backbone graph of any field (see the module docstring).

    ``seed_threshold``: normalised density floor of the ridge points (default the study's
    :func:`~neural_em.graph.density_graph.default_seed_threshold`); ``min_num_nodes``:
    smallest connected component kept; ``parameters`` or keyword ``overrides`` of
    :class:`BackboneParameters` (e.g. ``node_spacing_A=3.0``). A field with no ridge above
    the threshold gives an empty graph and a warning naming the map.
    """
    if not isinstance(field, DensityField):
        raise InputError(f"field must be a DensityField, got {type(field).__name__}")
    params = dataclasses.replace(parameters or BackboneParameters(), **overrides)
    if int(min_num_nodes) < 1:
        raise InputError(f"min_num_nodes must be at least 1, got {min_num_nodes!r}")
    if resolution_A is not None and not (np.isfinite(resolution_A) and resolution_A > 0):
        raise InputError(f"resolution must be a positive number, got {resolution_A!r}")
    threshold = default_seed_threshold(field) if seed_threshold is None else float(seed_threshold)
    if not np.isfinite(threshold):
        raise InputError(f"seed_threshold must be finite, got {seed_threshold!r}")
    timings: dict[str, float] = {}
    t_total = t0 = time.perf_counter()

    points, ridge_values = ridge_points(
        field,
        threshold=params.threshold_fraction * threshold,
        spacing_A=params.ridge_spacing_A,
        capture_A=params.ridge_capture_A,
        iterations=params.ridge_iterations,
    )
    n_ridge = len(points)
    timings["ridges"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if n_ridge:
        score, best, top = backbone_score(
            field, points, sigma_A=params.score_sigma_A, radius_A=params.score_radius_A
        )
        keep = (score >= params.score_fraction * best) & (score >= params.score_floor * top)
        points, score = points[keep], score[keep]
        strong_density = ridge_values[keep, 0] >= threshold
    else:
        score = np.zeros(0)
        strong_density = np.zeros(0, dtype=bool)
    n_scored = len(points)
    timings["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    points, both = merge_points(points, np.stack([score, strong_density], axis=1), params.merge_A)
    score, strong = both[:, 0], both[:, 1] > 0
    forest = ridge_forest(points, params.link_A)
    if params.threshold_fraction < 1.0 and len(points):
        # Hysteresis: weak ridge points stay only in trees that reach the threshold.
        _, tree = connected_components(forest, directed=False)
        reached = np.zeros(tree.max() + 1, dtype=bool)
        reached[tree[strong]] = True
        keep = reached[tree]
        points, score = points[keep], score[keep]
        forest = ridge_forest(points, params.link_A)
    neighbours = neighbours_of(forest) if len(points) else []
    degree = np.array([len(nb) for nb in neighbours], dtype=np.int64)
    alive, adj = prune_stubs(
        points,
        neighbours,
        params.prune_A,
        score=score,
        weak_length_A=params.prune_weak_A,
        weak_ratio=params.prune_weak_ratio,
    )
    timings["forest"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # Junctions of the forest before pruning: where side chains leave the backbone.
    junctions = points[alive & (degree >= 3)]
    weights = anchor_weights(
        points, junctions, sigma_A=params.anchor_sigma_A, weight=params.anchor_weight
    )
    nodes = place_nodes(
        points,
        adj,
        alive,
        weights,
        spacing_A=params.node_spacing_A,
        curved_spacing_A=params.curved_spacing_A,
        curvature=(params.curvature_straight, params.curvature_curved),
        min_A=params.node_min_A,
        max_A=params.node_max_A,
        penalty=params.spacing_penalty,
        separation_A=params.node_separation_A,
    )
    edges = forest_edges(points, adj, nodes)
    positions, node_score = points[nodes], score[nodes]
    edges = bridge_gaps(
        positions,
        edges,
        field,
        max_gap_A=params.bridge_A,
        min_density=params.bridge_fraction * threshold,
    )
    keep = small_component_mask(len(positions), edges, int(min_num_nodes))
    new_index = np.cumsum(keep) - 1
    edges = new_index[edges[keep[edges[:, 0]] & keep[edges[:, 1]]]] if len(edges) else edges
    positions, node_score = positions[keep], node_score[keep]
    timings["nodes_edges"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_total

    return assemble_graph(
        field,
        positions,
        edges,
        method="backbone",
        min_num_nodes=int(min_num_nodes),
        parameters={"seed_threshold": threshold, "min_num_nodes": int(min_num_nodes)},
        resolution_A=resolution_A,
        source=source,
        method_parameters={f"backbone_{k}": v for k, v in dataclasses.asdict(params).items()},
        node_attrs={"score": node_score},
        timings=timings,
        stats={
            "ridge_points": int(n_ridge),
            "scored_points": int(n_scored),
            "forest_points": int(alive.sum()),
        },
    )
