"""Density graphs as mmCIF (gemmi): one pseudo-atom per node, edges as ``struct_conn``.

A chain-like (backbone) graph is written as pseudo-chains of C-alphas, one per path, which
ChimeraX, Coot and PyMOL draw as a trace; any other graph as unknown-ligand atoms. Written
atomically; refuses to replace a file unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gemmi
import numpy as np

from neural_em.atomic import atomic_path
from neural_em.graph.export import GraphLike

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
    layout = mmcif_layout(graph) if layout is None else layout
    for c, members in enumerate(layout):
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
        _add_secondary_structure(st, graph, layout)
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
    st: gemmi.Structure, graph: GraphLike, layout: list[list[int]]
) -> None:
    """Helix records (``_struct_conf``) and one sheet of strands (``_struct_sheet_range``)
    over the runs of node label ``sse`` along each pseudo-chain of ``layout`` (residue ``r``
    of chain ``c`` is node ``layout[c][r]``), so viewers draw them."""
    sse = [graph.graph.nodes[node].get("sse", "coil") for node in graph.node_ids]
    sheet = gemmi.Sheet("S1")
    for c, members in enumerate(layout):
        chain = chain_name(c)
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
