"""Files of density graphs: node-link JSON, mmCIF (gemmi), GraphML and npz for graph learning.

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

import gemmi
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
#: Residues per chain in mmCIF output (keeps auth_seq_id within 4 digits).
RESIDUES_PER_CHAIN = 9999
#: Residue and atom names of the pseudo-atoms in mmCIF output (UNL: unknown ligand).
NODE_RESIDUE = "UNL"
NODE_ATOM = "C"
#: Residue and atom names of the nodes of a chain-like (backbone) graph in mmCIF output: each
#: path a pseudo-chain of C-alphas of unknown amino acids, which ChimeraX, Coot and PyMOL
#: draw as a trace.
TRACE_RESIDUE = "UNK"
TRACE_ATOM = "CA"

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
        if not isinstance(node, dict) or "id" not in node:
            raise InputError(f"node {k} must be an object with an 'id'", path)
        nid = node["id"]
        if not _is_int(nid) or nid < 0:
            raise InputError(f"node {k}: id must be a non-negative integer, got {nid!r}", path)
        if nid in g:
            raise InputError(f"node id {nid} appears twice", path)
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
        g.add_node(nid, **record)
    for k, edge in enumerate(edges):
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
        g.add_edge(a, b, **record)
    return g


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


# ---------------------------------------------------------------------------- mmCIF
def chain_name(index: int) -> str:
    """Chain id of the ``index``-th chain (0-based): A..Z, AA..ZZ, AAA.. (bijective base 26)."""
    if index < 0:
        raise ValueError("chain index must be >= 0")
    name = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        name = chr(ord("A") + r) + name
    return name


def trace_paths(graph: GraphLike) -> list[list[int]]:
    """The nodes of a graph as paths along its edges: node positions (in ``node_ids`` order)
    of each path, consecutive nodes joined by an edge,
    every node in exactly one path. Paths start at ends (degree 1) and continue through
    degree-2 nodes by preference; at a branch point the other branches become paths of their
    own. Deterministic."""
    ids = graph.node_ids
    index = {node: k for k, node in enumerate(ids)}
    return paths_of_edges(len(ids), [(index[a], index[b]) for a, b in graph.graph.edges])


def paths_of_edges(n: int, edges: Any) -> list[list[int]]:
    """:func:`trace_paths` of ``n`` nodes joined by ``edges`` (pairs of node positions)."""
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[int(a)].append(int(b))
        neighbours[int(b)].append(int(a))
    degree = [len(nb) for nb in neighbours]
    assigned = [False] * n
    paths = []
    for start in sorted(range(n), key=lambda v: (degree[v] != 1, v)):
        if assigned[start]:
            continue
        path, cur = [start], start
        assigned[start] = True
        while True:
            free = [u for u in neighbours[cur] if not assigned[u]]
            if not free:
                break
            cur = min(free, key=lambda u: (degree[u] > 2, u))
            assigned[cur] = True
            path.append(cur)
        paths.append(path)
    return paths


def _is_trace(graph: GraphLike) -> bool:
    return graph.graph.graph.get("method") == "backbone"


def mmcif_layout(graph: GraphLike) -> list[list[int]]:
    """Node positions per mmCIF chain, in the order the atoms are written: the paths of
    :func:`trace_paths` for a backbone graph (one pseudo-chain each), otherwise all nodes in
    order, :data:`RESIDUES_PER_CHAIN` a chain."""
    if _is_trace(graph):
        return trace_paths(graph)
    n = len(graph)
    return [list(range(s, min(n, s + RESIDUES_PER_CHAIN))) for s in range(0, n, RESIDUES_PER_CHAIN)]


def to_structure(
    graph: GraphLike, *, include_bonds: bool = True, layout: list[list[int]] | None = None
) -> gemmi.Structure:
    """A gemmi Structure, density in the B-factor.

    Study graphs: one pseudo-atom (residue ``UNL``, atom ``C``) per node, each node its own
    residue, 9999 residues a chain (chains A, B, ..., AA, ...). Backbone graphs (graph
    attribute ``method`` = ``backbone``): each path of :func:`trace_paths` a polymer chain of
    ``UNK`` residues with one ``CA`` atom, numbered along the path, so viewers draw the trace.
    Edges that are not between consecutive residues of a chain are written as covalent
    ``struct_conn`` connections when ``include_bonds`` (all edges for a study graph).
    ``layout``: :func:`mmcif_layout` of the graph, where the caller has it already.
    """
    pos = graph.positions
    dens = graph.densities
    trace = _is_trace(graph)
    res_name, atom_name = (TRACE_RESIDUE, TRACE_ATOM) if trace else (NODE_RESIDUE, NODE_ATOM)
    st = gemmi.Structure()
    st.name = (graph.map_id or "density_graph").replace(" ", "_")
    model = gemmi.Model(1)
    addresses: dict[int, tuple[str, int]] = {}
    serial = 0
    for c, members in enumerate(mmcif_layout(graph) if layout is None else layout):
        chain = gemmi.Chain(chain_name(c))
        for r, k in enumerate(members):
            res = gemmi.Residue()
            res.name = res_name
            res.seqid = gemmi.SeqId(r + 1, " ")
            res.label_seq = r + 1
            res.het_flag = "A" if trace else "H"
            res.entity_type = gemmi.EntityType.Polymer if trace else gemmi.EntityType.NonPolymer
            res.subchain = chain.name
            res.entity_id = "1"
            atom = gemmi.Atom()
            atom.name = atom_name
            atom.element = gemmi.Element("C")
            atom.pos = gemmi.Position(*pos[k])
            atom.occ = 1.0
            atom.b_iso = float(dens[k]) if np.isfinite(dens[k]) else 0.0
            serial += 1
            atom.serial = serial
            res.add_atom(atom)
            chain.add_residue(res)
            addresses[k] = (chain.name, r + 1)
        model.add_chain(chain)
    st.add_model(model)
    attrs = graph.graph.graph
    try:  # a P1 cell the size of the map box, where the graph records it
        box = np.asarray(attrs["shape_xyz"], dtype=float) * np.asarray(
            attrs["voxel_size"], dtype=float
        )
        if box.shape == (3,) and np.all(np.isfinite(box)) and np.all(box > 0):
            st.cell = gemmi.UnitCell(*box.tolist(), 90.0, 90.0, 90.0)
            st.spacegroup_hm = "P 1"
    except (KeyError, TypeError, ValueError):
        pass
    if trace:
        _add_secondary_structure(st, graph, addresses)
    entity = gemmi.Entity("1")
    entity.entity_type = gemmi.EntityType.Polymer if trace else gemmi.EntityType.NonPolymer
    if trace:
        entity.polymer_type = gemmi.PolymerType.PeptideL
    entity.subchains = [chain_name(i) for i in range(len(model))]
    st.entities.append(entity)
    if include_bonds:
        ei = graph.edge_index
        lengths = graph.edge_lengths
        for k, (a, b) in enumerate(ei.T):
            (chain_a, seq_a), (chain_b, seq_b) = addresses[int(a)], addresses[int(b)]
            if trace and chain_a == chain_b and abs(seq_a - seq_b) == 1:
                continue  # drawn as the chain itself
            con = gemmi.Connection()
            con.name = f"edge{k + 1}"
            con.type = gemmi.ConnectionType.Covale
            con.partner1 = gemmi.AtomAddress(chain_a, gemmi.SeqId(seq_a, " "), res_name, atom_name)
            con.partner2 = gemmi.AtomAddress(chain_b, gemmi.SeqId(seq_b, " "), res_name, atom_name)
            con.reported_distance = float(lengths[k])
            st.connections.append(con)
    return st


def sse_runs(labels: list[str], label: str, *, min_length: int = 2) -> list[tuple[int, int]]:
    """``(first, last)`` positions of the runs of ``label`` in ``labels``, at least
    ``min_length`` long."""
    runs, start = [], None
    for k, value in enumerate([*labels, None]):
        if value == label:
            start = k if start is None else start
        elif start is not None:
            if k - start >= min_length:
                runs.append((start, k - 1))
            start = None
    return runs


def _add_secondary_structure(
    st: gemmi.Structure, graph: GraphLike, addresses: dict[int, tuple[str, int]]
) -> None:
    """Helix records (``_struct_conf``) and one sheet of strands (``_struct_sheet_range``)
    over the runs of node label ``sse`` along each pseudo-chain, so viewers draw them."""
    sse = [graph.graph.nodes[node].get("sse", "coil") for node in graph.node_ids]
    chains: dict[str, list[int]] = {}
    for k, (chain, _) in sorted(addresses.items(), key=lambda kv: kv[1]):
        chains.setdefault(chain, []).append(k)
    sheet = gemmi.Sheet("S1")
    for chain, members in chains.items():
        labels = [sse[k] for k in members]
        for first, last in sse_runs(labels, "helix", min_length=3):
            helix = gemmi.Helix()
            helix.start = _address(chain, first + 1)
            helix.end = _address(chain, last + 1)
            helix.pdb_helix_class = gemmi.Helix.HelixClass.RAlpha
            helix.length = last - first + 1
            st.helices.append(helix)
        for first, last in sse_runs(labels, "strand", min_length=2):
            strand = gemmi.Sheet.Strand()
            strand.name = str(len(sheet.strands) + 1)
            strand.start = _address(chain, first + 1)
            strand.end = _address(chain, last + 1)
            sheet.strands.append(strand)
    if len(sheet.strands):
        st.sheets.append(sheet)


def _address(chain: str, seq: int) -> gemmi.AtomAddress:
    return gemmi.AtomAddress(chain, gemmi.SeqId(seq, " "), TRACE_RESIDUE, TRACE_ATOM)


def save_mmcif(
    graph: GraphLike,
    path: str | os.PathLike,
    *,
    include_bonds: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the graph as mmCIF (gemmi) atomically; readable by gemmi, ChimeraX and PyMOL.

    Coordinates are written to 0.001 Å; the B-factor column holds the node density with six
    significant digits.
    """
    layout = mmcif_layout(graph)
    st = to_structure(graph, include_bonds=include_bonds, layout=layout)
    groups = gemmi.MmcifOutputGroups(True)
    doc = st.make_mmcif_document(groups)
    block = doc.sole_block()
    # gemmi writes B-factors with two decimals; densities in [0, 1] need more.
    column = block.find_values("_atom_site.B_iso_or_equiv")
    dens = graph.densities
    order = [k for members in layout for k in members]  # atoms as written
    for row, k in enumerate(order[: len(column)]):
        column[row] = f"{dens[k]:.6g}" if np.isfinite(dens[k]) else "0"
    block.set_pair("_neural_em_graph.map_id", gemmi.cif.quote(graph.map_id or "?"))
    block.set_pair("_neural_em_graph.nodes", str(len(graph)))
    block.set_pair("_neural_em_graph.edges", str(graph.graph.number_of_edges()))
    block.set_pair("_neural_em_graph.b_factor", gemmi.cif.quote("normalised node density"))
    with atomic_path(path, overwrite=overwrite) as tmp:
        doc.write_file(str(tmp))
    return Path(path)


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


def save_npz(graph: GraphLike, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write arrays for graph learning (compressed npz, no pickled objects):

    ``positions`` (n, 3) float64 Å; ``features`` (n, 2) float32 [density, gradient norm];
    ``feature_names`` (2,); ``edge_index`` (2, m) int64 (positions in node order, i < j);
    ``edge_length`` (m,) float64 Å; ``node_ids`` (n,) int64; ``density`` and
    ``gradient_norm`` (n,) float64 (exact node attributes); ``graph_attrs`` JSON text.
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
    ei = arrays["edge_index"]
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise InputError(f"edge_index must be shaped (2, m), got {ei.shape}", path)
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise InputError("edge_index refers to nodes that do not exist", path)
    if np.any(ei[0] == ei[1]):
        raise InputError("edge_index holds self-loops", path)
    length = arrays["edge_length"]
    if length.shape != (ei.shape[1],) or not np.all(np.isfinite(length)) or np.any(length < 0):
        raise InputError("edge_length must be (m,) finite and >= 0", path)
    try:
        attrs = json.loads(str(arrays["graph_attrs"]), parse_constant=_refuse_constant)
    except ValueError as exc:
        raise InputError(f"graph_attrs is not valid JSON ({_short(exc)})", path) from exc
    if not isinstance(attrs, dict):
        raise InputError("graph_attrs must be a JSON object", path)
    arrays["graph_attrs"] = attrs
    return arrays


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
    ei, length = arrays["edge_index"], arrays["edge_length"]
    g.add_edges_from(
        (ids[int(a)], ids[int(b)], {"length": float(d)})
        for a, b, d in zip(ei[0], ei[1], length, strict=True)
    )
    return g
