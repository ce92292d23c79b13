"""One entry point for every graph method: ``study`` (the original density graph, the default)
and ``backbone`` (about one node per residue, edges along the chain).

:func:`build_graph` takes any field; :func:`graph_from_map` reads a map, fits the field and
builds the graph, recording the field's fitting time in ``graph.timings["field"]``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from neural_em.errors import InputError
from neural_em.fields.base import DensityField
from neural_em.graph.backbone import BackboneParameters, backbone_graph
from neural_em.graph.density_graph import DensityGraph, graph_of_map

#: Graph methods, the default first.
METHODS = ("study", "backbone")

#: Smallest connected component kept by each method unless asked otherwise (the study's 10;
#: a backbone piece of one or two residues is still backbone).
DEFAULT_MIN_NODES = {"study": 10, "backbone": 1}


def build_graph(
    field: DensityField,
    *,
    method: str = "study",
    resolution_A: float | None = None,
    seed_threshold: float | None = None,
    min_num_nodes: int | None = None,
    adjacency_A: float | None = None,
    refine: str | None = None,
    max_steps: int = 400,
    backbone: dict[str, Any] | None = None,
    devices: Sequence[str] | None = None,
    source: str = "",
) -> DensityGraph:
    """The graph of ``field`` by ``method``.

    ``resolution_A``: map resolution (the study's adjacency is 2 x resolution, 4 Å without
    one, unless ``adjacency_A``); ``min_num_nodes``: default :data:`DEFAULT_MIN_NODES`;
    ``refine``/``max_steps``/``adjacency_A``: the study method's options (refused with
    ``backbone``); ``backbone``: :class:`BackboneParameters` fields to override.
    """
    method = str(method)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if resolution_A is not None:
        try:
            res = float(resolution_A)
        except (TypeError, ValueError) as exc:
            raise InputError(f"resolution must be a positive number, got {resolution_A!r}") from exc
        if not (res > 0 and res < float("inf")):
            raise InputError(f"resolution must be a positive number, got {resolution_A!r}")
    min_nodes = DEFAULT_MIN_NODES[method] if min_num_nodes is None else int(min_num_nodes)
    if method == "backbone":
        if refine not in (None, "none"):
            raise InputError("--refine applies to the study method only")
        if adjacency_A is not None:
            raise InputError(
                "the adjacency distance applies to the study method only: "
                "backbone edges follow the density ridges"
            )
        if devices is not None and hasattr(field, "to_devices"):
            field.to_devices(devices)
        params = BackboneParameters(**(backbone or {}))
        return backbone_graph(
            field,
            seed_threshold=seed_threshold,
            min_num_nodes=min_nodes,
            resolution_A=resolution_A,
            parameters=params,
            source=source,
        )
    if backbone:
        raise InputError("backbone options apply to the backbone method only")
    adjacency = (
        adjacency_A
        if adjacency_A is not None
        else (2.0 * float(resolution_A) if resolution_A is not None else 4.0)
    )
    return DensityGraph.from_neural_density_map(
        field,
        seed_threshold=seed_threshold,
        adjacency_threshold=adjacency,
        min_num_nodes=min_nodes,
        devices=devices,
        refine=refine,
        resolution_A=resolution_A,
        max_steps=max_steps,
        source=source,
    )


def graph_from_map(
    path: str | os.PathLike,
    *,
    field: str = "spline",
    method: str = "study",
    contour: float | None = None,
    devices: Sequence[str] = ("cpu",),
    preset: str = "fast",
    max_voxels: int | None = None,
    field_options: dict[str, Any] | None = None,
    **options: Any,
) -> DensityGraph:
    """Read a map, fit ``field`` (``"spline"``, ``"neural"`` or ``"learned"``) and build its
    graph by ``method`` (:func:`~neural_em.graph.density_graph.graph_of_map`); ``options`` go
    to :func:`build_graph`."""
    if str(method) not in METHODS:  # before any work
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if method == "backbone":
        BackboneParameters(**(options.get("backbone") or {}))
    return graph_of_map(
        functools.partial(build_graph, method=method),
        path,
        field,
        contour=contour,
        devices=devices,
        preset=preset,
        max_voxels=max_voxels,
        field_options=field_options,
        **options,
    )
