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

:meth:`DensityGraph.from_field` is the method; :func:`assemble_graph` the tail every method
shares (component filter, graph attributes, assembly). :func:`neural_em.graph.build_graph`
picks a method.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from neural_em.errors import InputError
from neural_em.fields.base import DensityField
from neural_em.graph.export import (
    GRAPH_FORMAT,
    GRAPH_FORMAT_VERSION,
    load_graphml,
    load_json,
    npz_to_networkx,
    save_graphml,
    save_json,
    save_npz,
)
from neural_em.graph.mmcif import save_mmcif
from neural_em.graph.seeds import (
    DEFAULT_MAX_SEEDS,
    default_seed_threshold,
    seed_points,
    small_component_mask,
)
from neural_em.graph.walk import (
    WALK_CHUNK_POINTS,
    cluster_centroids,
    cluster_points,
    radius_edges,
    walk_uphill,
)

logger = logging.getLogger(__name__)


#: Refinements of the node set (see :func:`neural_em.graph.refine.refine_nodes`).
REFINE_CHOICES = ("none", "ridge")


def assemble_graph(
    field: DensityField,
    positions: np.ndarray,
    edges: np.ndarray,
    *,
    method: str,
    min_num_nodes: int,
    parameters: Mapping[str, Any],
    resolution_A: float | None,
    source: str = "",
    method_parameters: Mapping[str, Any] | None = None,
    values: np.ndarray | None = None,
    node_attrs: Mapping[str, np.ndarray] | None = None,
    timings: dict[str, float] | None = None,
    stats: Mapping[str, Any] | None = None,
) -> DensityGraph:
    """The tail every graph method shares: drop connected components smaller than
    ``min_num_nodes``, record the graph attributes, build the :class:`DensityGraph`.

    ``positions`` ``(n, 3)`` Å and ``edges`` ``(m, 2)`` node indices; ``values`` ``(n, 4)``
    (density and gradient; default: the field's at the nodes); ``node_attrs``: more node
    attributes, name -> ``(n,)`` array (numbers or strings). Graph attributes, in this order:
    format, version, ``method``, the field's id and kind, ``source``, ``parameters`` (the
    method's, ``seed_threshold`` first), ``resolution_A``, the field's box, then
    ``method_parameters``. ``stats`` gain the final ``nodes`` and ``edges``.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    keep = small_component_mask(len(positions), edges, int(min_num_nodes))
    new_index = np.cumsum(keep) - 1
    edges = new_index[edges[keep[edges[:, 0]] & keep[edges[:, 1]]]]
    positions = positions[keep]
    if values is None:
        values = field.get_values(positions) if len(positions) else np.zeros((0, 4))
    else:
        values = np.asarray(values)[keep]
    extra = {name: np.asarray(column)[keep] for name, column in (node_attrs or {}).items()}
    if len(positions) == 0:
        logger.warning(
            "%s: no %s graph node at density >= %.4g: the graph is empty",
            field.map_id or source or "the map",
            method,
            parameters.get("seed_threshold", float("nan")),
        )
    attrs = {
        "format": GRAPH_FORMAT,
        "format_version": GRAPH_FORMAT_VERSION,
        "method": method,
        "map_id": field.map_id,
        "field_kind": field.kind,
        "source": source,
        **parameters,
        "resolution_A": None if resolution_A is None else float(resolution_A),
        "voxel_size": [float(v) for v in field.voxel_size],
        "origin": [float(v) for v in field.origin],
        "shape_xyz": [int(v) for v in field.shape_xyz],
        **(method_parameters or {}),
    }
    stats = {**(stats or {}), "nodes": int(len(positions)), "edges": int(len(edges))}
    gnorm = np.linalg.norm(values[:, 1:].astype(np.float64), axis=1)
    graph = DensityGraph.from_arrays(
        positions, values[:, 0], gnorm, edges, attrs=attrs, timings=timings, stats=stats
    )
    for name, column in extra.items():
        for k, node in enumerate(graph.node_ids):
            value = column[k]
            graph.graph.nodes[node][name] = value.item() if isinstance(value, np.generic) else value
    logger.info(
        "%s graph: %d nodes, %d edges in %.2f s",
        method,
        len(positions),
        len(edges),
        (timings or {}).get("total", float("nan")),
    )
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
    def from_field(
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
        """The density graph of any field by the study's method (see the module docstring).

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
        timings["edges"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_total
        stats = {
            "seeds": int(len(seeds)),
            "capped": n_capped,
            "steps_total": int(steps.sum()),
            "steps_max": int(steps.max()) if len(steps) else 0,
            "clusters": int(n_clusters),
            **refine_stats,
        }
        parameters = {
            "seed_threshold": threshold,
            "seed_spacing_A": spacing,
            "step_A": step,
            "max_steps": int(max_steps),
            "cluster_eps_A": eps,
            "adjacency_A": adjacency,
            "min_num_nodes": int(min_num_nodes),
            "refine": refine,
        }
        return assemble_graph(
            field,
            centroids,
            edges,
            method="study",
            min_num_nodes=int(min_num_nodes),
            parameters=parameters,
            resolution_A=resolution_A,
            source=source,
            values=node_values,
            timings=timings,
            stats=stats,
        )

    @classmethod
    def from_neural_density_map(cls, *args: Any, **kwargs: Any) -> DensityGraph:
        """Deprecated name of :meth:`from_field` (any field works); removed in the next
        release."""
        warnings.warn(
            "DensityGraph.from_neural_density_map is deprecated: use DensityGraph.from_field "
            "or neural_em.graph.build_graph",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_field(*args, **kwargs)

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
        """Deprecated: :func:`neural_em.graph.graph_from_map` reads a map, fits a field and
        builds its graph by any method. Removed in the next release."""
        warnings.warn(
            "DensityGraph.from_voxel_density_map is deprecated: use neural_em.graph.graph_from_map",
            DeprecationWarning,
            stacklevel=2,
        )
        from neural_em.fields.kinds import fit_field

        t0 = time.perf_counter()
        fld = fit_field(
            path,
            field,
            contour=contour,
            max_voxels=max_voxels,
            devices=devices,
            preset=preset,
            **(field_options or {}),
        )
        fit_seconds = time.perf_counter() - t0
        graph_options.setdefault("source", os.fspath(path))
        devices_ = None if field == "spline" else devices
        graph = cls.from_field(fld, devices=devices_, **graph_options)
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
        """Read a graph file, the format picked by its suffix: ``.npz`` (:meth:`save_as_npz`),
        ``.graphml`` (:meth:`save_as_graphml`), otherwise node-link JSON (:meth:`save`);
        validated, no code run."""
        suffix = Path(path).suffix.lower()
        if suffix == ".npz":
            return cls(npz_to_networkx(path))
        if suffix == ".graphml":
            return cls(load_graphml(path))
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
        """GraphML (networkx): every node, edge and graph attribute."""
        return save_graphml(self, path, overwrite=overwrite)

    def save_as_npz(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Arrays for graph learning: positions, features, edge_index, edge lengths, and every
        node attribute (see :func:`neural_em.graph.export.save_npz`)."""
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
