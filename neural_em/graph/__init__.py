"""Density graphs of continuous fields, their files and their evaluation against models."""

from __future__ import annotations

from neural_em.graph.density_graph import (
    DensityGraph,
    cluster_points,
    default_seed_threshold,
    radius_edges,
    walk_uphill,
)

__all__ = [
    "DensityGraph",
    "cluster_points",
    "default_seed_threshold",
    "radius_edges",
    "walk_uphill",
]
