"""Files of density graphs: node-link JSON, GraphML and npz for graph learning (mmCIF:
:mod:`neural_em.graph.mmcif`).

Every writer is atomic (temporary file beside the target, then rename) and refuses to replace
an existing file unless ``overwrite=True``. The readers never execute code: JSON is parsed and
validated field by field (types, shapes, finite coordinates), npz is read with
``allow_pickle=False`` and checked the same way. Malformed files raise :class:`InputError`
naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Protocol

import networkx as nx
import numpy as np

from neural_em.atomic import atomic_path, atomic_write_text
from neural_em.errors import InputError

logger = logging.getLogger(__name__)

#: Format name and version written into every graph's attributes and files.
GRAPH_FORMAT = "neural-em-density-graph"
GRAPH_FORMAT_VERSION = 1


class GraphLike(Protocol):
    """What the writers need of a graph (:class:`~neural_em.graph.DensityGraph` has it):
    this module sits below the graph class and never imports it."""

    graph: nx.Graph

    def __len__(self) -> int: ...

    @property
    def map_id(self) -> str: ...

    @property
    def node_ids(self) -> list[Any]: ...

    @property
    def positions(self) -> np.ndarray: ...

    @property
    def densities(self) -> np.ndarray: ...

    @property
    def gradient_norms(self) -> np.ndarray: ...

    @property
    def edge_index(self) -> np.ndarray: ...

    @property
    def edge_lengths(self) -> np.ndarray: ...


#: Largest graph file read (bytes).
MAX_GRAPH_BYTES = 4 * 1024**3
_NODE_NUMBERS = ("x", "y", "z", "density", "gradient_norm")


# ---------------------------------------------------------------------------- JSON
def to_node_link(graph: GraphLike) -> dict[str, Any]:
    """The graph as a node-link dict (networkx layout, key ``edges``), JSON-safe (NaN -> null)."""
    g = graph.graph
    nodes = []
    for node in graph.node_ids:
        record: dict[str, Any] = {"id": node}
        for key, value in g.nodes[node].items():
            record[key] = _json_value(value)
        nodes.append(record)
    edges = []
    ids = graph.node_ids
    for a, b in graph.edge_index.T:
        record = {"source": ids[a], "target": ids[b]}
        for key, value in g.edges[ids[a], ids[b]].items():
            record[key] = _json_value(value)
        edges.append(record)
    attrs = {key: _json_value(value) for key, value in g.graph.items()}
    attrs.setdefault("format", GRAPH_FORMAT)
    attrs.setdefault("format_version", GRAPH_FORMAT_VERSION)
    return {"directed": False, "multigraph": False, "graph": attrs, "nodes": nodes, "edges": edges}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def save_json(graph: GraphLike, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write node-link JSON atomically; loadable with :func:`load_json` or
    ``networkx.node_link_graph(data, edges="edges")``."""
    text = json.dumps(to_node_link(graph), allow_nan=False, separators=(",", ":"))
    return atomic_write_text(path, text + "\n", overwrite=overwrite)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in JSON")


def load_json(path: str | os.PathLike) -> nx.Graph:
    """Read a node-link JSON graph, validating every field (no code is executed)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"not a JSON density graph ({_short(exc)})", path) from exc
    return from_node_link(obj, path)


def from_node_link(obj: Any, path: str | os.PathLike | None = None) -> nx.Graph:
    """Validate a node-link dict and build its networkx graph (wrap it in a
    :class:`~neural_em.graph.DensityGraph` for the views)."""
    if not isinstance(obj, dict):
        raise InputError("graph JSON must be an object with 'nodes' and 'edges'", path)
    if obj.get("directed", False) is not False or obj.get("multigraph", False) is not False:
        raise InputError("graph must be undirected and not a multigraph", path)
    nodes = obj.get("nodes")
    edges = obj.get("edges", obj.get("links"))
    attrs = obj.get("graph", {})
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise InputError("graph JSON needs lists 'nodes' and 'edges'", path)
    if not isinstance(attrs, dict):
        raise InputError("'graph' (graph attributes) must be an object", path)
    fmt = attrs.get("format", GRAPH_FORMAT)
    if fmt != GRAPH_FORMAT:
        raise InputError(f"graph format is {fmt!r}, not {GRAPH_FORMAT!r}", path)
    version = attrs.get("format_version", GRAPH_FORMAT_VERSION)
    if not _is_int(version) or version > GRAPH_FORMAT_VERSION:
        raise InputError(
            f"unsupported graph format version {version!r} "
            f"(this version reads up to {GRAPH_FORMAT_VERSION})",
            path,
        )
    if "map_id" in attrs and not isinstance(attrs["map_id"], str):
        raise InputError("graph attribute 'map_id' must be a string", path)
    g = nx.Graph(**attrs)
    for k, node in enumerate(nodes):
        nid, record = _node_record(k, node, path)
        if nid in g:
            raise InputError(f"node id {nid} appears twice", path)
        g.add_node(nid, **record)
    for k, edge in enumerate(edges):
        a, b, record = _edge_record(k, edge, g, path)
        g.add_edge(a, b, **record)
    return g


def _node_record(k: int, node: Any, path: str | os.PathLike | None) -> tuple[int, dict]:
    """The id and attributes of node ``k`` of a node-link list, validated."""
    if not isinstance(node, dict) or "id" not in node:
        raise InputError(f"node {k} must be an object with an 'id'", path)
    nid = node["id"]
    if not _is_int(nid) or nid < 0:
        raise InputError(f"node {k}: id must be a non-negative integer, got {nid!r}", path)
    record = {}
    for key, value in node.items():
        if key == "id":
            continue
        if key in _NODE_NUMBERS:
            if value is None and key == "gradient_norm":
                value = math.nan
            elif not _is_number(value) or not math.isfinite(value):
                raise InputError(
                    f"node {nid}: {key!r} must be a finite number, got {value!r}", path
                )
            value = float(value)
        elif not _is_scalar(value):
            raise InputError(
                f"node {nid}: attribute {key!r} must be a number, string or boolean", path
            )
        record[key] = value
    for key in ("x", "y", "z"):
        if key not in record:
            raise InputError(f"node {nid} lacks coordinate {key!r}", path)
    return nid, record


def _edge_record(
    k: int, edge: Any, g: nx.Graph, path: str | os.PathLike | None
) -> tuple[int, int, dict]:
    """The end nodes and attributes of edge ``k`` of a node-link list, validated against the
    nodes and edges of ``g`` so far."""
    if not isinstance(edge, dict):
        raise InputError(f"edge {k} must be an object", path)
    a, b = edge.get("source"), edge.get("target")
    if not (_is_int(a) and _is_int(b)) or a not in g or b not in g:
        raise InputError(
            f"edge {k}: source and target must be ids of nodes, got {a!r}, {b!r}", path
        )
    if a == b:
        raise InputError(f"edge {k}: self-loop on node {a}", path)
    if g.has_edge(a, b):
        raise InputError(f"edge {k}: duplicate edge {a}-{b}", path)
    record = {}
    for key, value in edge.items():
        if key in ("source", "target"):
            continue
        if key == "length":
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise InputError(
                    f"edge {k}: length must be a finite number >= 0, got {value!r}", path
                )
            value = float(value)
        elif not _is_scalar(value):
            raise InputError(
                f"edge {k}: attribute {key!r} must be a number, string or boolean", path
            )
        record[key] = value
    return a, b, record


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool)) or (_is_number(v) and math.isfinite(v))


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise InputError("no such graph file", path)
    size = path.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise InputError(f"graph file is {size} bytes, more than {MAX_GRAPH_BYTES}", path)
    return path.read_bytes()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


# ---------------------------------------------------------------------------- GraphML
def save_graphml(graph: GraphLike, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write GraphML (networkx) atomically; list and null graph attributes become JSON text."""
    g = graph.graph.copy()
    for key, value in list(g.graph.items()):
        if value is None or isinstance(value, (list, tuple, dict)):
            g.graph[key] = json.dumps(_json_value(value))
    with atomic_path(path, overwrite=overwrite) as tmp:
        nx.write_graphml(g, str(tmp))
    return Path(path)


def load_graphml(path: str | os.PathLike) -> nx.Graph:
    """Read a GraphML file written by :func:`save_graphml` into a networkx graph (node ids
    as integers)."""
    path = Path(path)
    _read_bytes(path)
    try:
        g = nx.read_graphml(str(path), node_type=int)
    except Exception as exc:  # networkx/xml raise many types
        raise InputError(f"not a readable GraphML file ({_short(exc)})", path) from exc
    return nx.Graph(g)


# ---------------------------------------------------------------------------- npz
#: Arrays of the npz file and their dtype kinds.
NPZ_ARRAYS = {
    "positions": "f",
    "features": "f",
    "feature_names": "U",
    "edge_index": "i",
    "edge_length": "f",
    "node_ids": "i",
    "density": "f",
    "gradient_norm": "f",
    "graph_attrs": "U",
}


#: Every other node attribute: ``node_attr_names`` (k,) and, per name ``i``, ``node_attr_i``
#: (n,) of one dtype (bool, int64, float64 or str) and, where some nodes lack it,
#: ``node_attr_i_present`` (n,) bool. Files without them (older ones) load.
NODE_ATTR_NAMES = "node_attr_names"


def _node_attr_arrays(graph: GraphLike, ids: list[Any]) -> dict[str, np.ndarray]:
    """The npz arrays of every node attribute besides :data:`_NODE_NUMBERS`."""
    nodes = graph.graph.nodes
    names: list[str] = []
    for node in ids:
        names.extend(k for k in nodes[node] if k not in _NODE_NUMBERS and k not in names)
    arrays: dict[str, np.ndarray] = {NODE_ATTR_NAMES: np.array(names, dtype=str)}
    for i, name in enumerate(names):
        column = [_json_value(nodes[node].get(name)) for node in ids]
        present = np.array([v is not None for v in column], dtype=bool)
        given = [v for v in column if v is not None]
        if all(isinstance(v, bool) for v in given):
            dtype, fill = bool, False
        elif all(_is_int(v) for v in given):
            dtype, fill = np.int64, 0
        elif all(_is_number(v) for v in given):
            dtype, fill = np.float64, math.nan
        elif all(isinstance(v, str) for v in given):
            dtype, fill = str, ""
        else:
            raise InputError(
                f"node attribute {name!r} mixes types: npz holds one type per attribute"
            )
        arrays[f"node_attr_{i}"] = np.array(
            [fill if v is None else v for v in column], dtype=dtype
        ).reshape(len(ids))
        if not present.all():
            arrays[f"node_attr_{i}_present"] = present
    return arrays


def save_npz(graph: GraphLike, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write arrays for graph learning (compressed npz, no pickled objects):

    ``positions`` (n, 3) float64 Å; ``features`` (n, 2) float32 [density, gradient norm];
    ``feature_names`` (2,); ``edge_index`` (2, m) int64 (positions in node order, i < j);
    ``edge_length`` (m,) float64 Å; ``node_ids`` (n,) int64; ``density`` and
    ``gradient_norm`` (n,) float64 (exact node attributes); ``graph_attrs`` JSON text; every
    other node attribute (numbers, booleans, strings) as :data:`NODE_ATTR_NAMES` describes.
    """
    ids = graph.node_ids
    if not all(isinstance(i, (int, np.integer)) for i in ids):
        raise InputError("npz export needs integer node ids")
    dens = graph.densities
    gnorm = graph.gradient_norms
    arrays = {
        "positions": graph.positions,
        "features": np.stack([dens, gnorm], axis=1).astype(np.float32).reshape(-1, 2),
        "feature_names": np.array(["density", "gradient_norm"]),
        "edge_index": graph.edge_index.astype(np.int64),
        "edge_length": graph.edge_lengths,
        "node_ids": np.array(ids, dtype=np.int64),
        "density": dens,
        "gradient_norm": gnorm,
        "graph_attrs": np.array(json.dumps(_json_value(dict(graph.graph.graph)))),
        **_node_attr_arrays(graph, ids),
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return Path(path)


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate an npz graph (``allow_pickle=False``): a dict of the arrays of
    :func:`save_npz`, ``graph_attrs`` decoded to a dict."""
    path = Path(path)
    _read_bytes(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise InputError("not an npz archive (a single .npy array)", path)
            missing = [k for k in NPZ_ARRAYS if k not in npz.files]
            if missing:
                raise InputError(f"npz graph lacks arrays {missing}", path)
            arrays = {k: npz[k] for k in NPZ_ARRAYS}
            if NODE_ATTR_NAMES in npz.files:
                arrays[NODE_ATTR_NAMES] = npz[NODE_ATTR_NAMES]
                extra = [k for k in npz.files if k.startswith("node_attr_")]
                arrays.update((k, npz[k]) for k in extra)
    except InputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise InputError(f"not a readable npz graph ({_short(exc)})", path) from exc
    for key, kind in NPZ_ARRAYS.items():
        if arrays[key].dtype.kind not in (kind, "u" if kind == "i" else kind):
            raise InputError(
                f"array {key!r} has dtype {arrays[key].dtype}, expected kind {kind!r}", path
            )
    pos = arrays["positions"]
    n = len(pos)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise InputError(f"positions must be shaped (n, 3), got {pos.shape}", path)
    if not np.all(np.isfinite(pos)):
        raise InputError("positions hold NaN or infinite values", path)
    for key, shape in (
        ("features", (n, 2)),
        ("node_ids", (n,)),
        ("density", (n,)),
        ("gradient_norm", (n,)),
    ):
        if arrays[key].shape != shape:
            raise InputError(f"{key} must be shaped {shape}, got {arrays[key].shape}", path)
    if not np.all(np.isfinite(arrays["density"])):
        raise InputError("density holds NaN or infinite values", path)
    if len(np.unique(arrays["node_ids"])) != n:
        raise InputError("node_ids are not unique", path)
    _check_npz_edges(arrays["edge_index"], arrays["edge_length"], n, path)
    arrays["graph_attrs"] = _npz_graph_attrs(arrays["graph_attrs"], path)
    arrays["node_attrs"] = _read_node_attrs(arrays, n, path)
    return arrays


def _npz_graph_attrs(text: np.ndarray, path: Path) -> dict[str, Any]:
    """The graph attributes of an npz graph, decoded from their JSON text."""
    try:
        attrs = json.loads(str(text), parse_constant=_refuse_constant)
    except ValueError as exc:
        raise InputError(f"graph_attrs is not valid JSON ({_short(exc)})", path) from exc
    if not isinstance(attrs, dict):
        raise InputError("graph_attrs must be a JSON object", path)
    return attrs


def _check_npz_edges(ei: np.ndarray, length: np.ndarray, n: int, path: Path) -> None:
    """Refuse an npz graph's edges unless ``(2, m)`` indices of ``n`` nodes, no self-loops,
    with ``(m,)`` finite lengths >= 0."""
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise InputError(f"edge_index must be shaped (2, m), got {ei.shape}", path)
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise InputError("edge_index refers to nodes that do not exist", path)
    if np.any(ei[0] == ei[1]):
        raise InputError("edge_index holds self-loops", path)
    if length.shape != (ei.shape[1],) or not np.all(np.isfinite(length)) or np.any(length < 0):
        raise InputError("edge_length must be (m,) finite and >= 0", path)


def _read_node_attrs(arrays: dict[str, Any], n: int, path: Path) -> dict[str, list[Any]]:
    """Name -> (n,) values (None where a node lacks it) of the npz's other node attributes."""
    names = arrays.get(NODE_ATTR_NAMES)
    if names is None:
        return {}
    if names.ndim != 1 or (names.size and names.dtype.kind != "U"):
        raise InputError(f"{NODE_ATTR_NAMES} must be a list of names", path)
    out: dict[str, list[Any]] = {}
    for i, name in enumerate(names.tolist()):
        if name in _NODE_NUMBERS or name in out:
            raise InputError(f"node attribute {name!r} given twice", path)
        values = arrays.get(f"node_attr_{i}")
        if values is None or values.shape != (n,) or values.dtype.kind not in "biufU":
            raise InputError(f"node attribute {name!r}: node_attr_{i} must be (n,) plain", path)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values) | np.isnan(values)):
            raise InputError(f"node attribute {name!r} holds infinite values", path)
        present = arrays.get(f"node_attr_{i}_present")
        if present is None:
            present = np.ones(n, dtype=bool)
        elif present.shape != (n,) or present.dtype.kind != "b":
            raise InputError(f"node attribute {name!r}: its presence must be (n,) bool", path)
        out[name] = [v if ok else None for v, ok in zip(values.tolist(), present, strict=True)]
    return out


def npz_to_networkx(path: str | os.PathLike) -> nx.Graph:
    """The networkx graph stored in an npz file (equal to the one saved)."""
    arrays = load_npz(path)
    g = nx.Graph(**arrays["graph_attrs"])
    ids = [int(i) for i in arrays["node_ids"]]
    pos, dens, gnorm = arrays["positions"], arrays["density"], arrays["gradient_norm"]
    g.add_nodes_from(
        (
            ids[k],
            {
                "x": float(pos[k, 0]),
                "y": float(pos[k, 1]),
                "z": float(pos[k, 2]),
                "density": float(dens[k]),
                "gradient_norm": float(gnorm[k]),
            },
        )
        for k in range(len(ids))
    )
    for name, values in arrays["node_attrs"].items():
        for k, value in enumerate(values):
            if value is not None:
                g.nodes[ids[k]][name] = value
    ei, length = arrays["edge_index"], arrays["edge_length"]
    g.add_edges_from(
        (ids[int(a)], ids[int(b)], {"length": float(d)})
        for a, b, d in zip(ei[0], ei[1], length, strict=True)
    )
    return g
