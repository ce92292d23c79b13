"""One door to a graph: every method (``study``, the original density graph and the default;
``backbone``, about one node per residue with edges along the chain) from any field
(:func:`build_graph`) or from a map file (:func:`graph_from_map`, which fits the field by
:func:`neural_em.fields.fit_field` and records its fitting time in ``graph.timings["field"]``).
The options are checked once, by :func:`check_options`, before any work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from neural_em.errors import InputError
from neural_em.fields.base import DensityField
from neural_em.fields.kinds import fit_field
from neural_em.graph.backbone import BackboneParameters, backbone_graph
from neural_em.graph.density_graph import DensityGraph

#: Graph methods, the default first.
METHODS = ("study", "backbone")

#: Smallest connected component kept by each method unless asked otherwise (the study's 10;
#: a backbone piece of one or two residues is still backbone).
DEFAULT_MIN_NODES = {"study": 10, "backbone": 1}


def check_options(
    method: str,
    *,
    resolution_A: float | None = None,
    adjacency_A: float | None = None,
    refine: str | None = None,
    backbone: dict[str, Any] | None = None,
) -> BackboneParameters | None:
    """Refuse an unknown method, a bad resolution and options of the other method (InputError);
    the backbone method's parameters, or None for the study method."""
    if str(method) not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if resolution_A is not None:
        try:
            res = float(resolution_A)
        except (TypeError, ValueError) as exc:
            raise InputError(f"resolution must be a positive number, got {resolution_A!r}") from exc
        if not (res > 0 and res < float("inf")):
            raise InputError(f"resolution must be a positive number, got {resolution_A!r}")
    if method == "study":
        if backbone:
            raise InputError("backbone options apply to the backbone method only")
        return None
    if refine not in (None, "none"):
        raise InputError("--refine applies to the study method only")
    if adjacency_A is not None:
        raise InputError(
            "the adjacency distance applies to the study method only: "
            "backbone edges follow the density ridges"
        )
    try:
        return BackboneParameters(**(backbone or {}))
    except TypeError as exc:
        raise InputError(f"unknown backbone option ({exc})") from exc


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
    ``backbone``); ``backbone``: :class:`BackboneParameters` fields to override;
    ``devices``: where a field that can move (the neural one) evaluates.
    """
    params = check_options(
        method, resolution_A=resolution_A, adjacency_A=adjacency_A, refine=refine, backbone=backbone
    )
    min_nodes = DEFAULT_MIN_NODES[method] if min_num_nodes is None else int(min_num_nodes)
    if params is not None:
        if devices is not None and hasattr(field, "to_devices"):
            field.to_devices(devices)
        return backbone_graph(
            field,
            seed_threshold=seed_threshold,
            min_num_nodes=min_nodes,
            resolution_A=resolution_A,
            parameters=params,
            source=source,
        )
    adjacency = (
        adjacency_A
        if adjacency_A is not None
        else (2.0 * float(resolution_A) if resolution_A is not None else 4.0)
    )
    return DensityGraph.from_field(
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
    """Read a map, fit a field of kind ``field`` (:data:`neural_em.fields.FIELD_KINDS`) and
    build its graph by ``method``; ``options`` go to :func:`build_graph` (checked before the
    fit). ``contour``: raw density level the map is cropped to (with a margin) before fitting,
    recorded in the graph's attributes; ``devices``/``preset``/``field_options``: the fit's."""
    check_options(
        method,
        resolution_A=options.get("resolution_A"),
        adjacency_A=options.get("adjacency_A"),
        refine=options.get("refine"),
        backbone=options.get("backbone"),
    )
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
    options.setdefault("source", os.fspath(path))
    graph = build_graph(
        fld, method=method, devices=None if field == "spline" else devices, **options
    )
    graph.timings["field"] = fit_seconds
    if contour is not None:
        graph.graph.graph["contour"] = float(contour)
    return graph
