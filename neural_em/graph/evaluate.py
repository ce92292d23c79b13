"""Evaluation of density graphs against atomic models, and the local-maximum baseline.

C-alpha metrics (cutoff 3 Å):

* recall: fraction of C-alphas matched one-to-one to distinct nodes within the cutoff, pairs
  taken greedily by ascending distance (ties by C-alpha index, then node index);
* coverage: fraction of C-alphas with any node within the cutoff;
* precision: fraction of nodes with any C-alpha within the cutoff;
* one_to_one_precision: matched nodes / all nodes (the one-to-one matching of recall; unlike
  precision it does not reward several nodes around one C-alpha);
* f1: harmonic mean of recall and one-to-one precision;
* rmsd: root mean square distance over the matched pairs (Å);
* nodes_per_ca: nodes / C-alphas.

Edge metrics (graphs): of the consecutive C-alpha pairs (same chain, next residue of the model,
at most :data:`CHAIN_BREAK_A` apart) whose two C-alphas are both matched, **chain_recall** is
the fraction whose two nodes share an edge; **edge_precision** is the fraction of all edges
that join the matched nodes of two consecutive C-alphas; **mean_degree** is 2 x edges / nodes.

Secondary structure (:func:`sse_metrics`): the recall of helix, strand and coil C-alphas
(the model's classes computed from its C-alphas by P-SEA, never read from HELIX/SHEET
records), and, for graphs whose nodes carry an ``sse`` label, each label's precision and
recall over the matched pairs.

Atom metrics (for maps better than 2 Å): the same at 1 Å against every heavy atom.
Baseline: voxels strictly higher than their 26 neighbours and at least the seed threshold.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TypedDict

import numpy as np
import scipy.ndimage
from scipy.spatial import cKDTree

from neural_em.errors import InputError
from neural_em.models import SSE_CLASSES, AtomicModel, ca_secondary_structure, read_model
from neural_em.voxelmap import VoxelMap

logger = logging.getLogger(__name__)

#: Consecutive C-alphas farther apart than this (Å) are a chain break (trans peptides put
#: them 3.8 Å apart, cis ones 2.9 Å).
CHAIN_BREAK_A = 4.3

#: Maps at a resolution better than this (Å) also get atom-level metrics.
ATOM_METRICS_RESOLUTION_A = 2.0

#: The metrics of a graph (:func:`evaluate_graph`), each a number or None: the names the
#: pipeline collects, one per column of its tables. A new metric is added here and in
#: :func:`evaluate_graph`; :class:`GraphMetrics` follows.
GRAPH_METRICS = (
    "recall",
    "coverage",
    "precision",
    "one_to_one_precision",
    "f1",
    "rmsd",
    "nodes",
    "ca",
    "nodes_per_ca",
    "edges",
    "chain_recall",
    "edge_precision",
    "mean_degree",
    *(f"recall_{label}" for label in SSE_CLASSES),
    *(f"label_{kind}_{label}" for label in SSE_CLASSES for kind in ("precision", "recall")),
)
#: The metrics of a point set against heavy atoms (``atoms`` of a graph's record).
ATOM_METRICS = ("recall", "coverage", "precision", "rmsd", "reference", "nodes")
#: The metrics of the local-maximum baseline (``baseline`` of a graph's record).
BASELINE_METRICS = ("recall", "coverage", "precision", "rmsd", "nodes", "nodes_per_ca")

#: The record of :func:`evaluate_graph`: every name of :data:`GRAPH_METRICS` (a number or
#: None), ``atoms`` and ``baseline`` where computed, and what was evaluated.
GraphMetrics = TypedDict(  # noqa: UP013 (built from the tuple: one list of names)
    "GraphMetrics",
    {
        **{name: Any for name in GRAPH_METRICS},
        "atoms": dict[str, Any],
        "baseline": dict[str, Any],
        "map_id": str,
        "method": str,
        "resolution_A": "float | None",
        "model": str,
        "warnings": list[str],
    },
    total=False,
)


def greedy_matching(
    reference: np.ndarray, predicted: np.ndarray, cutoff_A: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of reference points to predicted points within ``cutoff_A``.

    Candidate pairs (distance ``<= cutoff_A``) are taken in ascending distance (ties: by
    reference index, then predicted index), a pair kept when neither point is matched yet.
    Returns ``(reference index (k,), predicted index (k,), distance (k,) Å)``.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
    pred = np.asarray(predicted, dtype=np.float64).reshape(-1, 3)
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    if len(ref) == 0 or len(pred) == 0:
        return empty
    sdm = cKDTree(ref).sparse_distance_matrix(cKDTree(pred), float(cutoff_A), output_type="ndarray")
    if len(sdm) == 0:
        return empty
    i, j, d = sdm["i"].astype(np.int64), sdm["j"].astype(np.int64), sdm["v"]
    order = np.lexsort((j, i, d))
    used_ref = np.zeros(len(ref), dtype=bool)
    used_pred = np.zeros(len(pred), dtype=bool)
    keep = []
    for k in order.tolist():
        a, b = i[k], j[k]
        if used_ref[a] or used_pred[b]:
            continue
        used_ref[a] = used_pred[b] = True
        keep.append(k)
    keep_arr = np.array(keep, dtype=np.int64)
    return i[keep_arr], j[keep_arr], d[keep_arr]


def point_metrics(
    reference: np.ndarray, predicted: np.ndarray, cutoff_A: float = 3.0
) -> dict[str, Any]:
    """Recall, coverage, precision, RMSD and counts of predicted points against reference
    points (both ``(n, 3)`` Å). Fractions are None when undefined (no points)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1, 3)
    pred = np.asarray(predicted, dtype=np.float64).reshape(-1, 3)
    n_ref, n_pred = len(ref), len(pred)
    _, _, dist = greedy_matching(ref, pred, cutoff_A)
    if n_ref and n_pred:
        d_ref, _ = cKDTree(pred).query(ref, k=1, distance_upper_bound=cutoff_A * (1 + 1e-12))
        d_pred, _ = cKDTree(ref).query(pred, k=1, distance_upper_bound=cutoff_A * (1 + 1e-12))
        covered = int(np.count_nonzero(d_ref <= cutoff_A))
        precise = int(np.count_nonzero(d_pred <= cutoff_A))
    else:
        covered = precise = 0
    recall = len(dist) / n_ref if n_ref else None
    one_to_one = len(dist) / n_pred if n_pred else None
    f1 = (
        2 * recall * one_to_one / (recall + one_to_one)
        if recall and one_to_one
        else (0.0 if n_ref and n_pred else None)
    )
    return {
        "cutoff_A": float(cutoff_A),
        "recall": recall,
        "coverage": covered / n_ref if n_ref else None,
        "precision": precise / n_pred if n_pred else None,
        "one_to_one_precision": one_to_one,
        "f1": f1,
        "rmsd": float(np.sqrt(np.mean(dist**2))) if len(dist) else None,
        "matched": int(len(dist)),
        "reference": n_ref,
        "nodes": n_pred,
        "nodes_per_reference": n_pred / n_ref if n_ref else None,
    }


def consecutive_pairs(model: AtomicModel, *, max_distance_A: float = CHAIN_BREAK_A) -> np.ndarray:
    """Index pairs ``(k, 2)`` of consecutive C-alphas of ``model``: next in the model's order,
    same chain, at most ``max_distance_A`` apart."""
    ca = np.asarray(model.ca, dtype=np.float64).reshape(-1, 3)
    if len(ca) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    chains = np.array([label.split("/", 1)[0] for label in model.ca_labels])
    i = np.arange(len(ca) - 1)
    gap = np.linalg.norm(ca[1:] - ca[:-1], axis=1)
    ok = (chains[1:] == chains[:-1]) & (gap <= max_distance_A)
    return np.stack([i[ok], i[ok] + 1], axis=1).astype(np.int64)


def edge_metrics(
    model: AtomicModel,
    nodes: np.ndarray,
    edge_index: np.ndarray,
    *,
    cutoff_A: float = 3.0,
    matching: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Chain recall, edge precision and mean degree (see the module docstring) of a graph
    with node positions ``(n, 3)`` Å and edges ``(2, m)`` or ``(m, 2)`` (node positions);
    ``matching``: :func:`greedy_matching` of the C-alphas to the nodes, where the caller has
    it."""
    pts = np.asarray(nodes, dtype=np.float64).reshape(-1, 3)
    edges = np.asarray(edge_index, dtype=np.int64)
    if edges.ndim == 2 and edges.shape[0] == 2 and edges.shape[1] != 2:
        edges = edges.T
    edges = np.sort(edges.reshape(-1, 2), axis=1)
    ref_i, node_i, _ = greedy_matching(model.ca, pts, cutoff_A) if matching is None else matching
    node_of = np.full(len(model.ca), -1, dtype=np.int64)
    node_of[ref_i] = node_i
    pairs = consecutive_pairs(model)
    a, b = node_of[pairs[:, 0]], node_of[pairs[:, 1]]
    both = (a >= 0) & (b >= 0)
    chain = np.sort(np.stack([a[both], b[both]], axis=1), axis=1)
    n = max(len(pts), 1)
    edge_keys = set((edges[:, 0] * n + edges[:, 1]).tolist())
    chain_keys = set((chain[:, 0] * n + chain[:, 1]).tolist())
    joined = sum(1 for k in chain_keys if k in edge_keys)
    good = sum(1 for k in edge_keys if k in chain_keys)
    return {
        "chain_pairs": int(len(chain_keys)),
        "chain_recall": joined / len(chain_keys) if chain_keys else None,
        "edge_precision": good / len(edge_keys) if edge_keys else None,
        "mean_degree": 2.0 * len(edge_keys) / len(pts) if len(pts) else None,
    }


def node_sse(graph: Any) -> np.ndarray | None:
    """The ``sse`` label of every node ``(n,)`` of a graph, or None where any node lacks one."""
    nodes = graph.graph.nodes
    if not len(graph) or not all("sse" in nodes[n] for n in graph.node_ids):
        return None
    return np.array([nodes[n]["sse"] for n in graph.node_ids])


def label_counts(
    truth: np.ndarray, labels: np.ndarray, matching: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> dict[str, dict[str, int]]:
    """Per class of :data:`~neural_em.models.SSE_CLASSES`, over the matched pairs of
    ``matching`` (:func:`greedy_matching` of the model's C-alphas to the nodes): ``said``
    (the node is labelled so), ``true`` (the C-alpha is of that class, ``truth`` ``(k,)``)
    and ``both``. Sums of these pool label precision and recall over maps."""
    ref_i, node_i, _ = matching
    said_all = np.asarray(labels)[node_i] if len(node_i) else np.zeros(0, dtype="<U6")
    out = {}
    for label in SSE_CLASSES:
        said, true = said_all == label, np.asarray(truth)[ref_i] == label
        out[label] = {
            "said": int(said.sum()),
            "true": int(true.sum()),
            "both": int((said & true).sum()),
        }
    return out


def sse_metrics(
    model: AtomicModel,
    nodes: np.ndarray,
    labels: np.ndarray | None,
    *,
    cutoff_A: float = 3.0,
    matching: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per secondary-structure class (``helix``, ``strand``, ``coil``, the model's own from its
    C-alphas by P-SEA, :func:`~neural_em.models.ca_secondary_structure`): ``recall_<class>``,
    the fraction of that class's C-alphas matched one-to-one (as for ``recall``); with node
    ``labels`` ``(n,)``, ``label_precision_<class>`` (of the matched nodes labelled so, the
    fraction whose C-alpha is of that class) and ``label_recall_<class>`` (of the matched
    C-alphas of that class, the fraction whose node is labelled so). None where undefined;
    ``ca_<class>`` counts the model's C-alphas. ``matching``: :func:`greedy_matching` of the
    C-alphas to ``nodes``, where the caller has it."""
    truth = ca_secondary_structure(model)
    if matching is None:
        matching = greedy_matching(model.ca, nodes, cutoff_A)
    found = np.zeros(model.n_ca, dtype=bool)
    found[matching[0]] = True
    counts = label_counts(truth, labels, matching) if labels is not None else None
    out: dict[str, Any] = {}
    for label in SSE_CLASSES:
        is_class = truth == label
        out[f"ca_{label}"] = int(is_class.sum())
        out[f"recall_{label}"] = float(found[is_class].mean()) if is_class.any() else None
    for label in SSE_CLASSES:
        c = counts[label] if counts is not None else {"said": 0, "true": 0, "both": 0}
        out[f"label_precision_{label}"] = c["both"] / c["said"] if c["said"] else None
        out[f"label_recall_{label}"] = c["both"] / c["true"] if c["true"] else None
    return out


def _box_counts(points: np.ndarray, attrs: dict[str, Any]) -> int | None:
    try:
        origin = np.asarray(attrs["origin"], dtype=float)
        top = origin + (np.asarray(attrs["shape_xyz"], dtype=float) - 1) * np.asarray(
            attrs["voxel_size"], dtype=float
        )
    except (KeyError, TypeError, ValueError):
        return None
    if origin.shape != (3,) or top.shape != (3,):
        return None
    return int(np.count_nonzero(np.all((points >= origin) & (points <= top), axis=1)))


def evaluate_points(
    nodes: np.ndarray,
    model: AtomicModel | str | os.PathLike,
    *,
    resolution_A: float | None = None,
    ca_cutoff_A: float = 3.0,
    atom_cutoff_A: float = 1.0,
    atom_metrics: bool | None = None,
    box: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """C-alpha (and, below 2 Å or when asked, heavy-atom) metrics of node positions.

    nodes: ``(n, 3)`` Å; model: an :class:`AtomicModel` or a PDB/mmCIF path (InputError if
    unreadable or without C-alphas). ``box``: graph attributes with ``origin``,
    ``shape_xyz``, ``voxel_size`` to count model atoms inside the map box (a model entirely
    outside gives a warning and zero recall). Returns a JSON-able dict with ``recall``,
    ``coverage``, ``precision``, ``rmsd``, ``nodes``, ``ca``, ``nodes_per_ca`` and more.
    """
    if not isinstance(model, AtomicModel):
        model = read_model(model)
    if model.n_ca == 0:
        raise InputError("model has no C-alpha atoms of amino-acid residues", model.source or None)
    pts = np.asarray(nodes, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(pts)):
        raise InputError("node positions must be finite")
    ca = point_metrics(model.ca, pts, ca_cutoff_A)
    result: dict[str, Any] = {
        "recall": ca["recall"],
        "coverage": ca["coverage"],
        "precision": ca["precision"],
        "one_to_one_precision": ca["one_to_one_precision"],
        "f1": ca["f1"],
        "rmsd": ca["rmsd"],
        "matched": ca["matched"],
        "nodes": ca["nodes"],
        "ca": ca["reference"],
        "nodes_per_ca": ca["nodes_per_reference"],
        "cutoff_A": ca_cutoff_A,
        "model": model.source,
        "warnings": [],
    }
    if len(pts) == 0:
        result["warnings"].append("the graph has no nodes")
    if box is not None:
        inside = _box_counts(model.ca, box)
        if inside is not None:
            result["ca_in_box"] = inside
            if inside == 0:
                result["warnings"].append(
                    "the model lies outside the map box (no C-alpha inside): is it the "
                    "right model, or the right map origin?"
                )
            elif inside < model.n_ca:
                result["warnings"].append(
                    f"{model.n_ca - inside} of {model.n_ca} C-alphas lie outside the map box"
                )
    if atom_metrics is None:
        atom_metrics = resolution_A is not None and resolution_A < ATOM_METRICS_RESOLUTION_A
    if atom_metrics:
        result["atoms"] = point_metrics(model.heavy, pts, atom_cutoff_A)
    return result


def local_maxima(vmap: VoxelMap, threshold: float) -> np.ndarray:
    """World positions ``(k, 3)`` Å of voxels strictly higher than all 26 neighbours (outside
    the box counts as lower) with value ``>= threshold``, in ``data`` (z, y, x) order."""
    data = vmap.data
    footprint = np.ones((3, 3, 3), dtype=bool)
    footprint[1, 1, 1] = False
    neighbours = scipy.ndimage.maximum_filter(
        data, footprint=footprint, mode="constant", cval=-np.inf
    )
    mask = (data > neighbours) & (data >= threshold)
    zyx = np.argwhere(mask)
    return vmap.index_to_world(zyx[:, ::-1])


def baseline_metrics(
    vmap: VoxelMap,
    model: AtomicModel | str | os.PathLike,
    *,
    threshold: float,
    resolution_A: float | None = None,
    ca_cutoff_A: float = 3.0,
    atom_cutoff_A: float = 1.0,
    atom_metrics: bool | None = None,
) -> dict[str, Any]:
    """Metrics of the local-maximum baseline of a normalised map (see :func:`local_maxima`)."""
    points = local_maxima(vmap, threshold)
    result = evaluate_points(
        points,
        model,
        resolution_A=resolution_A,
        ca_cutoff_A=ca_cutoff_A,
        atom_cutoff_A=atom_cutoff_A,
        atom_metrics=atom_metrics,
    )
    result["threshold"] = float(threshold)
    result.pop("warnings", None)
    return result


def evaluate_graph(
    graph: Any,
    model: AtomicModel | str | os.PathLike,
    *,
    resolution_A: float | None = None,
    baseline_map: VoxelMap | None = None,
    ca_cutoff_A: float = 3.0,
    atom_cutoff_A: float = 1.0,
    atom_metrics: bool | None = None,
) -> GraphMetrics:
    """Metrics of a :class:`~neural_em.graph.DensityGraph` against a model (every name of
    :data:`GRAPH_METRICS`), and of the local-maximum baseline of ``baseline_map``
    (normalised) when given, at the graph's seed threshold. ``resolution_A`` defaults to the
    graph's recorded resolution."""
    attrs = dict(graph.graph.graph)
    if resolution_A is None and isinstance(attrs.get("resolution_A"), (int, float)):
        resolution_A = float(attrs["resolution_A"])
    if not isinstance(model, AtomicModel):
        model = read_model(model)
    result = evaluate_points(
        graph.positions,
        model,
        resolution_A=resolution_A,
        ca_cutoff_A=ca_cutoff_A,
        atom_cutoff_A=atom_cutoff_A,
        atom_metrics=atom_metrics,
        box=attrs,
    )
    result["map_id"] = attrs.get("map_id", "")
    result["method"] = attrs.get("method", "study")
    result["resolution_A"] = resolution_A
    result["edges"] = graph.graph.number_of_edges()
    matching = greedy_matching(model.ca, graph.positions, ca_cutoff_A)
    result.update(
        edge_metrics(
            model, graph.positions, graph.edge_index, cutoff_A=ca_cutoff_A, matching=matching
        )
    )
    result.update(
        sse_metrics(
            model, graph.positions, node_sse(graph), cutoff_A=ca_cutoff_A, matching=matching
        )
    )
    if baseline_map is not None:
        threshold = attrs.get("seed_threshold")
        if not isinstance(threshold, (int, float)):
            norm = baseline_map.normalisation
            mean, std = (
                (norm.mean, norm.std)
                if norm is not None
                else (float(baseline_map.data.mean()), float(baseline_map.data.std()))
            )
            threshold = max(0.1, mean + 3.0 * std)
        result["baseline"] = baseline_metrics(
            baseline_map,
            model,
            threshold=float(threshold),
            resolution_A=resolution_A,
            ca_cutoff_A=ca_cutoff_A,
            atom_cutoff_A=atom_cutoff_A,
            atom_metrics=atom_metrics,
        )
    return GraphMetrics(**result)
