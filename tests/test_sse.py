"""Secondary structure in the backbone graph: helix axes found in a synthetic map (and none on
a lone chain), one node per residue along a helix axis, labels from the axes and from the
graph's own paths, strands beside each other, the model's classes by P-SEA, the per-class
metrics, the labels in every export, coarse maps and bad options, and the real maps."""

from __future__ import annotations

import json
import logging

import gemmi
import networkx as nx
import numpy as np
import pytest
from helpers import shared_file
from test_backbone import backbone_density, chain_ca

from neural_em.cli.main import main
from neural_em.errors import InputError
from neural_em.fields.spline import SplineDensityMap
from neural_em.graph import DensityGraph
from neural_em.graph.backbone import BackboneParameters, backbone_graph
from neural_em.graph.evaluate import evaluate_graph, sse_metrics
from neural_em.graph.export import load_npz
from neural_em.graph.methods import graph_from_map
from neural_em.graph.sse import (
    HelixAxis,
    axis_distance,
    helix_axes,
    hemisphere_directions,
    node_labels,
    replace_helix_nodes,
    strand_mask,
    trace_geometry,
    winding_mask,
)
from neural_em.models import AtomicModel, ca_secondary_structure
from neural_em.voxelmap import VoxelMap


def helix_ca(n: int, start=(20.0, 15.0, 6.0)) -> np.ndarray:
    """C-alphas of an ideal alpha-helix along +z: radius 2.3 Å, 100 degrees and 1.5 Å per
    residue (3.8 Å between consecutive C-alphas)."""
    angle = np.radians(100.0) * np.arange(n)
    return np.stack(
        [
            start[0] + 2.3 * np.cos(angle),
            start[1] + 2.3 * np.sin(angle),
            start[2] + 1.5 * np.arange(n),
        ],
        axis=1,
    )


def straight_chain(first: np.ndarray, n: int, direction=(1.0, 0.3, 0.2)) -> np.ndarray:
    d = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    return np.asarray(first, dtype=float) + 3.8 * np.arange(1, n + 1)[:, None] * d


def tube_map(ca: np.ndarray, *, sigma_A: float, shape_xyz=(48, 32, 40)) -> VoxelMap:
    """Gaussian density along the C-alpha trace (the C-alphas, and three points between each
    pair): at ``sigma_A`` 1.6 Å about a 4.5 Å map, where a helix is a rod."""
    centres, weights = [], []
    for i, p in enumerate(ca):
        centres.append(p)
        weights.append(1.0)
        if i + 1 < len(ca):
            for t in (0.25, 0.5, 0.75):
                centres.append(p + t * (ca[i + 1] - p))
                weights.append(0.7)
    nx_, ny, nz = shape_xyz
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx_), indexing="ij")
    data = np.zeros((nz, ny, nx_))
    for c, w in zip(centres, weights, strict=True):
        data += w * np.exp(
            -((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * sigma_A**2)
        )
    return VoxelMap(data=data.astype(np.float32), voxel_size=(1.0,) * 3, origin=(0.0,) * 3)


@pytest.fixture(scope="module")
def helix_then_chain() -> AtomicModel:
    """A 16-residue helix along z, then 7 residues of straight chain leaving its end."""
    helix = helix_ca(16)
    ca = np.concatenate([helix, straight_chain(helix[-1], 7)])
    labels = [f"A/{k + 1}" for k in range(len(ca))]
    return AtomicModel(ca=ca, ca_labels=labels, heavy=ca, source="synthetic")


@pytest.fixture(scope="module")
def rod_field(helix_then_chain) -> SplineDensityMap:
    return SplineDensityMap(tube_map(helix_then_chain.ca, sigma_A=1.6))


@pytest.fixture(scope="module")
def rod_graph(rod_field) -> DensityGraph:
    return backbone_graph(rod_field, resolution_A=4.5)


# ---------------------------------------------------------------------------- the model's classes
def test_psea_reads_the_helix_and_the_chain(helix_then_chain):
    sse = ca_secondary_structure(helix_then_chain)
    # P-SEA leaves the helix's first and last residue (whose i-1 or i+4 neighbours are not in
    # the helix) to coil; measured: residues 2-15 helix.
    assert (sse[1:15] == "helix").all()
    assert (sse[16:] == "coil").all()


def test_psea_respects_chains_and_numbering():
    helix = helix_ca(12)
    model = AtomicModel(
        ca=np.concatenate([helix, helix + [30.0, 0, 0]]),
        ca_labels=[f"A/{k + 1}" for k in range(12)] + [f"B/{k + 101}" for k in range(12)],
        heavy=np.zeros((0, 3)),
    )
    sse = ca_secondary_structure(model)
    assert len(sse) == 24
    assert (sse[1:11] == "helix").all() and (sse[13:23] == "helix").all()


# ---------------------------------------------------------------------------- helix axes
def test_directions_cover_the_hemisphere():
    dirs = hemisphere_directions(60)
    assert dirs.shape == (60, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    assert (dirs[:, 2] > 0).all()
    # Every direction (or its opposite) lies within 15 degrees of one of them.
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(500, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    assert np.abs(probe @ dirs.T).max(axis=1).min() >= np.cos(np.radians(15))


def test_the_helix_axis_is_found_where_the_helix_is(rod_field, helix_then_chain):
    axes = helix_axes(rod_field)
    assert len(axes) == 1
    axis = axes[0]
    assert abs(axis.direction @ [0.0, 0.0, 1.0]) >= 0.98
    # Measured: 24.1 Å for a helix of 16 residues (22.5 Å rise), score 0.82.
    assert 18.0 <= axis.length_A <= 28.0
    assert axis.score >= 0.6
    # The axis runs through the helix's centre (x 20, y 15), not along the chain that leaves it.
    radial = np.linalg.norm(axis.points[:, :2] - [20.0, 15.0], axis=1)
    assert np.median(radial) <= 1.0
    assert axis.points[:, 2].max() <= helix_then_chain.ca[15, 2] + 4.0


def test_a_lone_straight_chain_is_no_helix():
    chain = chain_ca()
    field = SplineDensityMap(backbone_density([chain]))
    # A thin line correlates with a cylinder too; its rod is empty around it.
    assert helix_axes(field) == []
    graph = backbone_graph(field, resolution_A=3.0)
    assert {d["sse"] for _, d in graph.graph.nodes(data=True)} <= {"coil", "strand"}
    assert graph.stats["helices"] == 0


def test_one_node_per_residue_along_the_helix(rod_graph, rod_field, helix_then_chain):
    r = evaluate_graph(rod_graph, helix_then_chain)
    # Measured at this blur (about 4.5 Å): 23 nodes for 23 C-alphas, recall 0.96, helix
    # recall 1.0; without helices 16 nodes and helix recall 0.57 (one node per 3 Å of axis).
    assert rod_graph.stats["helices_on_axis"] == 1
    assert 0.9 <= r["nodes_per_ca"] <= 1.15
    assert r["recall_helix"] >= 0.9
    assert r["recall"] >= 0.9 and r["one_to_one_precision"] >= 0.85
    # Edges join consecutive residues inside the helix and the helix to the chain.
    assert r["chain_recall"] >= 0.9 and r["edge_precision"] >= 0.85
    assert nx.number_connected_components(rod_graph.graph) == 1
    plain = backbone_graph(rod_field, resolution_A=4.5, sse=False)
    assert evaluate_graph(plain, helix_then_chain)["recall_helix"] <= r["recall_helix"] - 0.2


def test_labels_say_helix_in_the_helix_and_coil_on_the_chain(rod_graph, helix_then_chain):
    r = evaluate_graph(rod_graph, helix_then_chain)
    assert r["label_precision_helix"] >= 0.9 and r["label_recall_helix"] >= 0.9
    labels = np.array([d["sse"] for _, d in rod_graph.graph.nodes(data=True)])
    far = rod_graph.positions[:, 0] > 30.0  # the chain's end, 10 Å past the helix
    assert far.any() and (labels[far] == "coil").all()
    assert rod_graph.stats["helix_nodes"] == int(np.count_nonzero(labels == "helix"))


def test_resolved_helix_keeps_its_nodes_on_the_backbone():
    # At a blur of 1.2 Å the tube is hollow and the ridge follows the spiral: nodes stay at
    # the C-alphas (none replaced), and the path's winding labels them.
    helix = helix_ca(16)
    field = SplineDensityMap(tube_map(helix, sigma_A=1.2))
    graph = backbone_graph(field, resolution_A=3.0)
    model = AtomicModel(ca=helix, ca_labels=[f"A/{k + 1}" for k in range(16)], heavy=helix)
    r = evaluate_graph(graph, model)
    # Measured: 14 nodes for 16 C-alphas, recall 0.875, RMSD 1.0 Å, 11 nodes labelled helix.
    assert graph.stats["helices"] == 1 and graph.stats["helices_on_axis"] == 0
    plain = backbone_graph(field, resolution_A=3.0, sse=False)
    np.testing.assert_array_equal(graph.positions, plain.positions)
    assert r["recall"] >= 0.85 and r["rmsd"] <= 1.1
    assert r["label_recall_helix"] >= 0.8 and r["label_precision_helix"] >= 0.9


# ---------------------------------------------------------------------------- pieces
def test_trace_geometry_and_winding_on_ideal_paths():
    helix = helix_ca(12)
    edges = np.stack([np.arange(11), np.arange(1, 12)], axis=1)
    assert (trace_geometry(helix, edges)[1:11] == "helix").all()
    assert winding_mask(helix, edges).all()
    line = np.arange(12)[:, None] * [3.8, 0.0, 0.0]
    assert (trace_geometry(line, edges) != "helix").all()
    assert not winding_mask(line, edges).any()
    # A window whose line is not the given axis does not count.
    across = HelixAxis(
        points=np.array([[20.0, 0.0, 0.0], [20.0, 30.0, 0.0]]),
        direction=np.array([0.0, 1.0, 0.0]),
        length_A=30.0,
        score=0.5,
    )
    assert not winding_mask(helix, edges, axes=[across]).any()


def test_strands_side_by_side_are_labelled_and_a_lone_strand_is_not():
    one = np.arange(8)[:, None] * [3.3, 0.0, 0.0] + [0.0, 0.0, 0.0]
    two = one + [0.0, 4.8, 0.0]
    positions = np.concatenate([one, two])
    edges = np.array([(k, k + 1) for k in range(7)] + [(k, k + 1) for k in range(8, 15)])
    mask = strand_mask(positions, edges, np.ones(16, dtype=bool))
    # Interior nodes (degree 2, straight) of both strands.
    assert mask[1:7].all() and mask[9:15].all()
    assert not strand_mask(one, edges[:7], np.ones(8, dtype=bool)).any()
    labels = node_labels(positions, edges, [])
    assert (labels[mask] == "strand").all() and (labels[~mask] == "coil").all()


def test_axis_distance_counts_only_between_the_ends():
    axis = HelixAxis(
        points=np.array([[0.0, 0.0, z] for z in range(0, 11)]),
        direction=np.array([0.0, 0.0, 1.0]),
        length_A=10.0,
        score=0.7,
    )
    points = np.array([[2.0, 0, 5.0], [2.0, 0, 11.0], [2.0, 0, 12.0], [2.0, 0, -5.0]])
    d, which = axis_distance(points, [axis])
    assert d[0] == pytest.approx(2.0) and which[0] == 0
    assert d[1] == pytest.approx(np.hypot(2.0, 1.0))  # 1 Å past the end: within the margin
    assert np.isinf(d[2]) and np.isinf(d[3]) and which[3] == -1
    d, _ = axis_distance(points, [axis], end_margin_A=-1.0)  # trimmed ends
    assert d[0] == pytest.approx(2.0) and np.isinf(d[1])


def test_replacing_helix_nodes_joins_the_chain_at_the_ends():
    axis = HelixAxis(
        points=np.array([[0.0, 0.0, z] for z in np.arange(0.0, 9.1, 1.5)]),
        direction=np.array([0.0, 0.0, 1.0]),
        length_A=9.0,
        score=0.7,
    )
    # A chain entering below the axis, three nodes on it, leaving above it.
    positions = np.array([[0, 0, -5.0], [0, 0.5, 1.0], [0, 0.5, 4.5], [0, 0.5, 8.0], [0, 0, 14.0]])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    samples = axis.points.copy()
    pos, new_edges, kept = replace_helix_nodes(positions, edges, [samples], [axis])
    assert kept.tolist() == [0, 4]
    assert len(pos) == 2 + len(samples)
    graph = nx.Graph([tuple(e) for e in new_edges.tolist()])
    # One path from the chain's first node to its last, through every helix node in order.
    assert nx.is_connected(graph) and max(d for _, d in graph.degree) == 2
    assert nx.shortest_path_length(graph, 0, 1) == len(samples) + 1


# ---------------------------------------------------------------------------- metrics
def test_sse_metrics_by_hand(helix_then_chain):
    ca = helix_then_chain.ca
    truth = ca_secondary_structure(helix_then_chain)
    labels = np.where(truth == "helix", "helix", "coil")
    labels[5] = "coil"  # one helix C-alpha's node says coil
    labels[20] = "helix"  # one chain C-alpha's node says helix
    keep = np.arange(len(ca)) != 18  # and one chain C-alpha has no node
    r = sse_metrics(helix_then_chain, ca[keep], labels[keep])
    n_helix = int((truth == "helix").sum())
    assert r["ca_helix"] == n_helix and r["ca_strand"] == 0
    assert r["recall_helix"] == 1.0 and r["recall_strand"] is None
    assert r["recall_coil"] == pytest.approx(1 - 1 / (len(ca) - n_helix))
    assert r["label_precision_helix"] == pytest.approx((n_helix - 1) / n_helix)
    assert r["label_recall_helix"] == pytest.approx((n_helix - 1) / n_helix)
    assert r["label_precision_strand"] is None and r["label_recall_strand"] is None
    # Without labels, only the per-class recall.
    plain = sse_metrics(helix_then_chain, ca, None)
    assert plain["recall_helix"] == 1.0 and plain["label_precision_helix"] is None


# ---------------------------------------------------------------------------- outputs
def test_labels_in_json_graphml_npz_and_mmcif(rod_graph, tmp_path):
    labels = [d["sse"] for _, d in rod_graph.graph.nodes(data=True)]
    assert set(labels) <= {"helix", "strand", "coil"} and "helix" in labels
    rod_graph.save(tmp_path / "g.graph.json")
    back = DensityGraph.load(tmp_path / "g.graph.json")
    assert [d["sse"] for _, d in back.graph.nodes(data=True)] == labels
    rod_graph.save_as_graphml(tmp_path / "g.graphml")
    gml = nx.read_graphml(tmp_path / "g.graphml")
    assert [d["sse"] for _, d in gml.nodes(data=True)] == labels
    rod_graph.save_as_npz(tmp_path / "g.npz")
    assert [str(s) for s in load_npz(tmp_path / "g.npz")["node_attrs"]["sse"]] == labels
    rod_graph.save_as_mmcif(tmp_path / "g.cif")
    st = gemmi.read_structure(str(tmp_path / "g.cif"))
    assert len(st.helices) == 1
    helix = st.helices[0]
    # The helix record spans the helix nodes of its pseudo-chain.
    residues = [r for r in st[0][helix.start.chain_name]]
    span = [
        r
        for r in residues
        if helix.start.res_id.seqid.num <= r.seqid.num <= helix.end.res_id.seqid.num
    ]
    assert len(span) == labels.count("helix")
    block = gemmi.cif.read(str(tmp_path / "g.cif")).sole_block()
    assert list(block.find_values("_struct_conf.conf_type_id")) == ["HELX_P"]


def test_strands_become_a_sheet_in_mmcif(tmp_path):
    one = np.arange(8)[:, None] * [3.3, 0.0, 0.0] + [2.0, 2.0, 2.0]
    two = one + [0.0, 4.8, 0.0]
    positions = np.concatenate([one, two])
    edges = np.array([(k, k + 1) for k in range(7)] + [(k, k + 1) for k in range(8, 15)])
    graph = DensityGraph.from_arrays(
        positions,
        np.ones(16),
        np.ones(16),
        edges,
        attrs={"method": "backbone", "map_id": "sheet"},
    )
    labels = node_labels(positions, edges, [])
    for k, node in enumerate(graph.node_ids):
        graph.graph.nodes[node]["sse"] = str(labels[k])
    graph.save_as_mmcif(tmp_path / "s.cif")
    st = gemmi.read_structure(str(tmp_path / "s.cif"))
    assert len(st.sheets) == 1 and len(st.sheets[0].strands) == 2


# ---------------------------------------------------------------------------- limits
def test_a_coarse_map_is_labelled_coil_with_a_warning(rod_field, caplog):
    with caplog.at_level(logging.WARNING, logger="neural_em.graph.backbone"):
        graph = backbone_graph(rod_field, resolution_A=8.0)
    assert "too coarse" in caplog.text
    assert graph.stats["helices"] == 0
    assert {d["sse"] for _, d in graph.graph.nodes(data=True)} == {"coil"}


def test_sse_off_labels_coil_and_places_as_before(rod_field):
    graph = backbone_graph(rod_field, resolution_A=4.5, sse=False)
    assert graph.stats["helices"] == 0
    assert {d["sse"] for _, d in graph.graph.nodes(data=True)} == {"coil"}


@pytest.mark.parametrize(
    "override",
    [{"sse": "yes"}, {"helix_min_score": 1.5}, {"helix_min_length_A": 0.0}, {"helix_rise_A": -1}],
)
def test_bad_sse_options_are_refused(override, tmp_path):
    with pytest.raises(InputError, match=next(iter(override))):
        BackboneParameters(**override)
    with pytest.raises(InputError, match=next(iter(override))):
        graph_from_map(tmp_path / "absent.mrc", method="backbone", backbone=override)


def test_cli_no_sse_and_evaluate_prints_the_classes(rod_field, helix_then_chain, tmp_path, capsys):
    from neural_em.voxelmap import write_map

    path = tmp_path / "rod.mrc"
    write_map(path, tube_map(helix_then_chain.ca, sigma_A=1.6))
    model = tmp_path / "m.pdb"
    st = gemmi.Structure()
    mdl = gemmi.Model(1)
    chain = gemmi.Chain("A")
    for k, p in enumerate(helix_then_chain.ca):
        res = gemmi.Residue()
        res.name, res.seqid = "ALA", gemmi.SeqId(k + 1, " ")
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos = "CA", gemmi.Element("C"), gemmi.Position(*p)
        res.add_atom(atom)
        chain.add_residue(res)
    mdl.add_chain(chain)
    st.add_model(mdl)
    st.write_pdb(str(model))
    assert (
        main(["graph", str(path), "--method", "study", "--no-sse", "-o", str(tmp_path / "x.json")])
        == 2
    )
    out = tmp_path / "g.graph.json"
    assert (
        main(["graph", str(path), "--method", "backbone", "--resolution", "4.5", "-o", str(out)])
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--model", str(model), "--no-baseline"]) == 0
    text = capsys.readouterr().out
    assert "helix" in text and "label" in text
    assert main(["evaluate", str(out), "--model", str(model), "--no-baseline", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["recall_helix"] >= 0.9 and record["label_precision_helix"] >= 0.9


# ---------------------------------------------------------------------------- real maps
@pytest.mark.parametrize(
    "map_rel, model_rel, res, floors",
    [
        # floors: helix recall, helix label precision, helix label recall; measured on the
        # project's CPU machine 0.991 / 0.771 / 0.931 (EMD-6272, 2.6 Å) and 0.728 / 0.821 /
        # 0.835 (EMD-5778, 3.28 Å, helix-rich, its helices partly unresolved).
        ("emd_6272/emd_6272_zone.mrc", "emd_6272/3j9s.pdb", 2.6, (0.95, 0.70, 0.85)),
        ("emd_5778/emd_5778_chainA.mrc", "emd_5778/3j5p.pdb", 3.28, (0.68, 0.75, 0.75)),
    ],
)
def test_real_map_helices(map_rel, model_rel, res, floors):
    path, model = shared_file(map_rel), shared_file(model_rel)
    graph = graph_from_map(path, method="backbone", resolution_A=res)
    r = evaluate_graph(graph, model)
    assert r["recall_helix"] >= floors[0]
    assert r["label_precision_helix"] >= floors[1]
    assert r["label_recall_helix"] >= floors[2]
    assert graph.stats["helices"] >= 5
