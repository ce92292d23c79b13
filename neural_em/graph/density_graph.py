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
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from neural_em.errors import InputError
from neural_em.fields.base import DensityField
from neural_em.graph.export import (
    GRAPH_FORMAT,
    GRAPH_FORMAT_VERSION,
    load_json,
    npz_to_networkx,
    save_graphml,
    save_json,
    save_mmcif,
    save_npz,
)
from neural_em.graph.seeds import (  # noqa: F401 (re-exported: the public names of the method)
    DEFAULT_MAX_SEEDS,
    default_seed_threshold,
    seed_points,
    small_component_mask,
)
from neural_em.graph.walk import (  # noqa: F401
    WALK_CHUNK_POINTS,
    cluster_centroids,
    cluster_points,
    radius_edges,
    walk_uphill,
)

logger = logging.getLogger(__name__)


#: Refinements of the node set (see :func:`neural_em.graph.refine.refine_nodes`).
REFINE_CHOICES = ("none", "ridge")


# ---------------------------------------------------------------------------- the graph
def field_from_map(
    path: str | os.PathLike,
    kind: str = "spline",
    *,
    contour: float | None = None,
    devices: Sequence[str] = ("cpu",),
    preset: str = "fast",
    max_voxels: int | None = None,
    field_options: dict[str, Any] | None = None,
) -> DensityField:
    """Read a map and fit the field a graph is drawn from: ``"spline"``, ``"neural"`` or
    ``"learned"`` (the packaged network's 2x refinement, :mod:`neural_em.fields.learned`).

    ``contour``: raw density level to crop the map to (with a margin) before fitting;
    ``devices``/``preset``/``field_options``: passed to the neural fit. The field's
    ``max_voxels`` is set, so the same limit bounds the graph's seed grid.
    """
    kind = str(kind)
    if kind == "spline":
        from neural_em.fields.spline import SplineDensityMap

        fld: DensityField = SplineDensityMap.from_voxel_map(path, contour, max_voxels=max_voxels)
    elif kind == "neural":
        try:
            from neural_em.fields.neural import NeuralDensityMap
        except ImportError as exc:
            raise InputError("the neural field is not available in this build") from exc
        fld = NeuralDensityMap.from_voxel_map(
            path,
            contour,
            devices=tuple(devices),
            preset=preset,
            max_voxels=max_voxels,
            **(field_options or {}),
        )
    elif kind == "learned":
        from neural_em.fields.learned import LearnedDensityMap

        fld = LearnedDensityMap.from_voxel_map(
            path, contour, max_voxels=max_voxels, **(field_options or {})
        )
    else:
        raise InputError(f"field must be 'spline', 'neural' or 'learned', got {kind!r}")
    fld.max_voxels = max_voxels
    return fld


def graph_of_map(
    build: Callable[..., DensityGraph],
    path: str | os.PathLike,
    kind: str = "spline",
    *,
    contour: float | None = None,
    devices: Sequence[str] = ("cpu",),
    preset: str = "fast",
    max_voxels: int | None = None,
    field_options: dict[str, Any] | None = None,
    **graph_options: Any,
) -> DensityGraph:
    """Fit the field of a map (:func:`field_from_map`) and draw its graph with
    ``build(field, devices=..., source=..., **graph_options)`` (any graph method); the fit's
    seconds go to ``graph.timings["field"]`` and the contour to the graph's attributes."""
    t0 = time.perf_counter()
    fld = field_from_map(
        path,
        kind,
        contour=contour,
        devices=devices,
        preset=preset,
        max_voxels=max_voxels,
        field_options=field_options,
    )
    fit_seconds = time.perf_counter() - t0
    graph_options.setdefault("source", os.fspath(path))
    graph = build(fld, devices=None if kind == "spline" else devices, **graph_options)
    graph.timings["field"] = fit_seconds
    if contour is not None:
        graph.graph.graph["contour"] = float(contour)
    return graph


class DensityGraph:
    """A density graph: ``graph`` is a :class:`networkx.Graph` with node attributes ``x``,
    ``y``, ``z`` (Å), ``density``, ``gradient_norm`` and edge attribute ``length`` (Å); its
    graph attributes record the map id and the parameters. ``timings`` holds seconds per step
    (``seeding``, ``walking``, ``clustering``, ``refine``, ``edges``, ``total``); ``stats``
    counts (seeds, capped walks, clusters, nodes, edges).
    """

    def __init__(
        self,
        graph: nx.Graph,
        *,
        timings: dict[str, float] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(graph, nx.Graph) or graph.is_directed() or graph.is_multigraph():
            raise InputError("a density graph must be an undirected networkx.Graph")
        self.graph = graph
        self.timings: dict[str, float] = dict(timings or {})
        self.stats: dict[str, Any] = dict(stats or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        positions: np.ndarray,
        densities: np.ndarray,
        gradient_norms: np.ndarray | None,
        edges: np.ndarray,
        *,
        attrs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> DensityGraph:
        """Build from node positions ``(n, 3)`` Å, densities ``(n,)``, gradient norms ``(n,)``
        and edges ``(m, 2)`` (node indices); edge lengths are computed."""
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        dens = np.asarray(densities, dtype=np.float64).reshape(-1)
        gnorm = (
            np.full(len(pos), np.nan)
            if gradient_norms is None
            else np.asarray(gradient_norms, dtype=np.float64).reshape(-1)
        )
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        graph = nx.Graph(**(attrs or {}))
        graph.add_nodes_from(
            (
                i,
                {
                    "x": float(p[0]),
                    "y": float(p[1]),
                    "z": float(p[2]),
                    "density": float(d),
                    "gradient_norm": float(g),
                },
            )
            for i, (p, d, g) in enumerate(zip(pos, dens, gnorm, strict=True))
        )
        lengths = np.linalg.norm(pos[e[:, 1]] - pos[e[:, 0]], axis=1) if len(e) else []
        graph.add_edges_from(
            (int(a), int(b), {"length": float(d)}) for (a, b), d in zip(e, lengths, strict=True)
        )
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
        spacing = (
            float(min(0.5, float(np.min(field.voxel_size))))
            if seed_spacing_A is None
            else _positive(seed_spacing_A, "seed_spacing_A")
        )
        threshold = (
            default_seed_threshold(field) if seed_threshold is None else float(seed_threshold)
        )
        if not np.isfinite(threshold):
            raise InputError(f"seed_threshold must be finite, got {seed_threshold!r}")
        if threads is None:
            threads = min(2, os.cpu_count() or 1) if field.kind in ("spline",) else 1
        timings: dict[str, float] = {}
        t_total = t0 = time.perf_counter()

        seeds, values = seed_points(
            field, spacing_A=spacing, threshold=threshold, max_seeds=int(max_seeds)
        )
        timings["seeding"] = time.perf_counter() - t0
        logger.info("%d seeds at density >= %.4g on a %.3g Å grid", len(seeds), threshold, spacing)

        t0 = time.perf_counter()
        # Small chunks keep a spline's coefficient gathers in cache; other fields (torch)
        # prefer their own, larger batches.
        chunk = WALK_CHUNK_POINTS if field.kind == "spline" else max(1, field.chunk_points)
        ends, steps, capped = walk_uphill(
            field,
            seeds,
            values,
            step_A=step,
            max_steps=int(max_steps),
            batch_size=int(batch_size),
            threads=int(threads),
            chunk_points=chunk,
        )
        del values
        timings["walking"] = time.perf_counter() - t0
        n_capped = int(capped.sum())
        if n_capped:
            logger.warning(
                "%d of %d seeds hit the cap of %d steps", n_capped, len(seeds), max_steps
            )

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

            keep, refine_stats = refine_nodes(
                field,
                centroids,
                node_values,
                method=refine,
                threshold=threshold,
                resolution_A=resolution_A,
            )
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
        graph = cls.from_arrays(
            centroids, node_values[:, 0], gnorm, edges, attrs=attrs, timings=timings, stats=stats
        )
        logger.info(
            "density graph: %d nodes, %d edges (%d clusters, %d seeds) in %.2f s",
            len(centroids),
            len(edges),
            n_clusters,
            len(seeds),
            timings["total"],
        )
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
        return graph_of_map(
            cls.from_neural_density_map,
            path,
            field,
            contour=contour,
            devices=devices,
            preset=preset,
            max_voxels=max_voxels,
            field_options=field_options,
            **graph_options,
        )

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
        return np.array(
            [[nodes[i]["x"], nodes[i]["y"], nodes[i]["z"]] for i in self.node_ids], dtype=np.float64
        ).reshape(-1, 3)

    @property
    def densities(self) -> np.ndarray:
        """Node densities ``(n,)`` (normalised)."""
        nodes = self.graph.nodes
        return np.array([nodes[i].get("density", np.nan) for i in self.node_ids], dtype=np.float64)

    @property
    def gradient_norms(self) -> np.ndarray:
        """Gradient norm ``(n,)`` at the nodes, density per Å (NaN where unknown)."""
        nodes = self.graph.nodes
        return np.array(
            [nodes[i].get("gradient_norm", np.nan) for i in self.node_ids], dtype=np.float64
        )

    @property
    def edge_index(self) -> np.ndarray:
        """Edges ``(2, m)`` int64 as positions in :attr:`node_ids` order, ``i < j``, sorted."""
        index = {node: k for k, node in enumerate(self.node_ids)}
        pairs = np.array(
            [sorted((index[a], index[b])) for a, b in self.graph.edges], dtype=np.int64
        ).reshape(-1, 2)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        return pairs.T.copy()

    @property
    def edge_lengths(self) -> np.ndarray:
        """Edge lengths ``(m,)`` Å in :attr:`edge_index` order."""
        ids = self.node_ids
        ei = self.edge_index
        return np.array(
            [self.graph.edges[ids[a], ids[b]].get("length", np.nan) for a, b in ei.T],
            dtype=np.float64,
        )

    def summary(self) -> dict[str, Any]:
        """Counts, parameters and timings as a JSON-able dict."""
        return {
            "map_id": self.map_id,
            "nodes": len(self),
            "edges": self.graph.number_of_edges(),
            "timings": dict(self.timings),
            "stats": dict(self.stats),
            "parameters": dict(self.graph.graph),
        }

    def __repr__(self) -> str:
        return (
            f"DensityGraph(map_id={self.map_id!r}, nodes={len(self)}, "
            f"edges={self.graph.number_of_edges()})"
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the graph as node-link JSON (see :mod:`neural_em.graph.export`)."""
        return save_json(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DensityGraph:
        """Read a node-link JSON graph written by :meth:`save` (validated, no code run)."""
        return cls(load_json(path))

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> DensityGraph:
        """Read a graph written by :meth:`save_as_npz` (validated, no code run)."""
        return cls(npz_to_networkx(path))

    def save_as_mmcif(
        self, path: str | os.PathLike, include_bonds: bool = True, *, overwrite: bool = False
    ) -> Path:
        """One pseudo-atom per node (own residue), density as B-factor, edges as struct_conn."""
        return save_mmcif(self, path, include_bonds=include_bonds, overwrite=overwrite)

    def save_as_graphml(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        return save_graphml(self, path, overwrite=overwrite)

    def save_as_npz(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Arrays for graph learning: positions, features, edge_index, edge lengths."""
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
