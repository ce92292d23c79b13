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
6. **Helices** (:mod:`neural_em.graph.sse`, ``sse``). Helix axes are found in the field by a
   normalised cylinder correlation traced into straight rods of at least two turns. Where a
   strong axis's residues are covered below ``helix_min_coverage`` by the nodes (the ridge
   ran along the axis, as at 3.5 Å and worse, or was lost), its nodes are replaced by one
   every ``helix_rise_A`` (1.5 Å, a residue's rise) along the axis, joined in order and, at
   the helix's ends, to the chain. A resolved helix, whose nodes follow its backbone, keeps
   them.
7. Connected components smaller than ``min_num_nodes`` are dropped; every node is labelled
   ``sse`` = ``helix``, ``strand`` or ``coil`` (:func:`~neural_em.graph.sse.node_labels`;
   all ``coil`` for maps coarser than 6 Å, with a warning).

Node attributes as for every density graph (``x``, ``y``, ``z`` Å, ``density``,
``gradient_norm``) plus ``score`` (the blurred backbone score) and ``sse``; graph attributes
``method = "backbone"``, ``helix_axes`` (start, end Å, length, score of each) and the
parameters.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import scipy.ndimage
import scipy.sparse
from scipy.sparse.csgraph import connected_components

from neural_em.errors import InputError
from neural_em.fields.base import DensityField
from neural_em.graph.density_graph import DensityGraph, assemble_graph
from neural_em.graph.forest import (
    bridge_gaps,
    forest_edges,
    merge_points,
    neighbours_of,
    prune_stubs,
    ridge_forest,
)
from neural_em.graph.placement import anchor_weights, place_nodes
from neural_em.graph.seeds import (
    default_seed_threshold,
    field_volume,
    seed_points,
    small_component_mask,
)
from neural_em.graph.sse import (
    COARSEST_RESOLUTION_A,
    HelixAxis,
    axis_coverage,
    axis_samples,
    helix_axes,
    node_labels,
    replace_helix_nodes,
)
from neural_em.models import SSE_CLASSES

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BackboneParameters:
    """Parameters of the backbone method (lengths in Å; see the module docstring).

    ``threshold_fraction``: ridge points down to this fraction of the seed threshold, kept
    where their tree reaches the threshold (hysteresis; 1: off); ``score_floor``: also drop
    ridge points whose score is below this fraction of the box's highest score (0: off);
    ``anchor_weight``: 0 places nodes by spacing alone; ``spacing_penalty``: per Å^2 of chord
    deviation from ``node_spacing_A``, in units of the anchor weight; ``sse``: find helices
    and strands (:mod:`neural_em.graph.sse`), place one node per ``helix_rise_A`` along a
    helix axis whose residues the nodes cover below ``helix_min_coverage``, label every
    node; helix axes
    need a normalised cylinder correlation ``>= helix_min_score`` (field blurred by
    ``helix_blur_A``) over ``helix_min_length_A`` and a rod at least ``helix_min_fullness``
    full (:func:`~neural_em.graph.sse.rod_fullness`); nodes within ``helix_radius_A`` of an
    axis are ``helix``.
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
    sse: bool = True
    helix_min_score: float = 0.5
    helix_low_score: float = 0.45
    helix_strong_score: float = 0.6
    helix_min_length_A: float = 10.0
    helix_min_fullness: float = 0.4
    helix_blur_A: float = 1.0
    helix_radius_A: float = 3.0
    helix_min_coverage: float = 0.85
    helix_rise_A: float = 1.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sse":
                if not isinstance(value, (bool, np.bool_)):
                    raise InputError(f"sse must be true or false, got {value!r}")
                continue
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


_FRACTIONS = (
    "score_fraction",
    "bridge_fraction",
    "score_floor",
    "prune_weak_ratio",
    "helix_min_score",
    "helix_low_score",
    "helix_strong_score",
)


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
    field: DensityField,
    points: np.ndarray,
    *,
    sigma_A: float = 1.5,
    radius_A: float = 5.0,
    volume: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The blurred density at ``points`` ``(n, 3)`` Å, the highest blurred density within
    ``radius_A`` of each, both ``(n,)``, and the highest in the box: the field sampled on its
    own voxel grid (``volume``, :func:`~neural_em.graph.seeds.field_volume`, where the caller
    has it), blurred with a Gaussian of ``sigma_A`` (zero outside the box)."""
    data, vs, origin = field_volume(field) if volume is None else volume
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


# ---------------------------------------------------------------------------- helices
def _find_helices(
    field: DensityField,
    params: BackboneParameters,
    resolution_A: float | None,
    source: str,
    volume: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> list[HelixAxis]:
    """The helix axes of the field, or none (with a warning naming the map) where the map is
    coarser than :data:`~neural_em.graph.sse.COARSEST_RESOLUTION_A` or ``sse`` is off."""
    if not params.sse:
        return []
    if resolution_A is not None and resolution_A > COARSEST_RESOLUTION_A:
        logger.warning(
            "%s: at %.3g Å the map is too coarse to tell helices and strands (coarser than "
            "%.3g Å): every node is labelled coil",
            field.map_id or source or "the map",
            resolution_A,
            COARSEST_RESOLUTION_A,
        )
        return []
    return helix_axes(
        field,
        min_score=params.helix_min_score,
        low_score=params.helix_low_score,
        min_length_A=params.helix_min_length_A,
        min_fullness=params.helix_min_fullness,
        blur_A=params.helix_blur_A,
        volume=volume,
    )


def _helix_axis_nodes(
    field: DensityField,
    positions: np.ndarray,
    edges: np.ndarray,
    node_score: np.ndarray,
    axes: list[HelixAxis],
    params: BackboneParameters,
    volume: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Where the nodes cover a helix axis's residues below ``helix_min_coverage`` (the
    ridge ran along the axis, or was lost), its nodes replaced by one every
    ``helix_rise_A`` along the axis, joined in order and to the chain at its ends; also how
    many axes were so replaced. A resolved helix, whose nodes follow its backbone, keeps
    them. ``node_score`` ``(n,)`` follows the nodes (the new ones scored like ridge points)."""
    thin = [
        a
        for a in axes
        if a.score >= params.helix_strong_score
        and axis_coverage(positions, a) < params.helix_min_coverage
    ]
    if not thin:
        return positions, edges, node_score, 0
    samples = [axis_samples(field, a, rise_A=params.helix_rise_A) for a in thin]
    positions, edges, kept = replace_helix_nodes(positions, edges, samples, thin)
    new_score = backbone_score(
        field,
        positions[len(kept) :],
        sigma_A=params.score_sigma_A,
        radius_A=params.score_radius_A,
        volume=volume,
    )[0]
    return positions, edges, np.concatenate([node_score[kept], new_score]), len(thin)


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
    volume = field_volume(field) if n_ridge else None
    if n_ridge:
        score, best, top = backbone_score(
            field,
            points,
            sigma_A=params.score_sigma_A,
            radius_A=params.score_radius_A,
            volume=volume,
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
    axes = _find_helices(field, params, resolution_A, source, volume) if n_scored else []
    timings["helices"] = time.perf_counter() - t0

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
    positions, edges, node_score, replaced = _helix_axis_nodes(
        field, positions, edges, node_score, axes, params, volume
    )
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
    labels = node_labels(
        positions,
        edges,
        axes,
        helix_radius_A=params.helix_radius_A,
        strong_score=params.helix_strong_score,
    )
    if not params.sse:
        labels[:] = "coil"
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
        method_parameters={
            "helix_axes": [axis.to_json() for axis in axes],
            **{f"backbone_{k}": v for k, v in dataclasses.asdict(params).items()},
        },
        node_attrs={"score": node_score, "sse": labels},
        timings=timings,
        stats={
            "ridge_points": int(n_ridge),
            "scored_points": int(n_scored),
            "forest_points": int(alive.sum()),
            "helices": len(axes),
            "helices_on_axis": int(replaced),
            **{f"{label}_nodes": int(np.count_nonzero(labels == label)) for label in SSE_CLASSES},
        },
    )
