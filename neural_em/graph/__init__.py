"""Density graphs of continuous fields, their files and their evaluation against models.

One door: :func:`build_graph` (any field, any method) and :func:`graph_from_map` (a map file:
fit the field, then build); :class:`DensityGraph` holds the result and its files.
"""

from __future__ import annotations

from neural_em.graph.density_graph import DensityGraph
from neural_em.graph.methods import METHODS, build_graph, graph_from_map
from neural_em.graph.seeds import default_seed_threshold
from neural_em.graph.walk import cluster_points, radius_edges, walk_uphill

__all__ = [
    "METHODS",
    "DensityGraph",
    "build_graph",
    "cluster_points",
    "default_seed_threshold",
    "graph_from_map",
    "radius_edges",
    "walk_uphill",
]
