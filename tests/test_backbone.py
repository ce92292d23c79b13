"""The backbone graph: ridge points on a synthetic chain with side chains, one node per
residue, edges along the chain, bridging and its limits, every field kind, option checks, the
exports' pseudo-chains, the chain metrics, and the real maps of ../shared/data."""

from __future__ import annotations

import json
import logging

import gemmi
import networkx as nx
import numpy as np
import pytest
from helpers import shared_file

from neural_em.cli.main import main
from neural_em.errors import InputError
from neural_em.fields.base import VolumeField
from neural_em.fields.classical import FourierDensityMap
from neural_em.fields.spline import SplineDensityMap
from neural_em.graph import DensityGraph
from neural_em.graph.backbone import (
    BackboneParameters,
    backbone_graph,
    ball_maximum,
    ridge_points,
)
from neural_em.graph.evaluate import consecutive_pairs, edge_metrics, evaluate_graph
from neural_em.graph.export import load_npz
from neural_em.graph.forest import bridge_gaps
from neural_em.graph.methods import build_graph, graph_from_map
from neural_em.graph.mmcif import trace_paths
from neural_em.models import AtomicModel
from neural_em.voxelmap import VoxelMap, write_map


def chain_ca(n: int = 22, start=(6.0, 8.0, 12.0)) -> np.ndarray:
    """C-alphas 3.8 Å apart along a meandering path (an extended chain; non-consecutive
    C-alphas at least 7.4 Å apart), about 53 x 26 x 5 Å."""
    ca = [np.asarray(start, dtype=float)]
    for k in range(1, n):
        angle = 1.2 * np.sin(0.3 * k)
        direction = np.array([np.cos(angle), np.sin(angle), 0.3 * np.sin(0.5 * k)])
        ca.append(ca[-1] + 3.8 * direction / np.linalg.norm(direction))
    return np.array(ca)


def backbone_density(
    chains: list[np.ndarray],
    *,
    shape_xyz=(64, 40, 26),
    voxel_A=1.0,
    sigma_A=1.0,
    origin=(0.0, 0.0, 0.0),
) -> VoxelMap:
    """Gaussian backbone tubes: blobs at the C-alphas (1.0), at the thirds of each C-alpha
    pair (0.8, the peptide) and a side chain 2.4 Å off each C-alpha (0.6), alternating."""
    centres, weights = [], []
    for ca in chains:
        for i, p in enumerate(ca):
            centres.append(p)
            weights.append(1.0)
            if i + 1 < len(ca):
                for t in (1 / 3, 2 / 3):
                    centres.append(p + t * (ca[i + 1] - p))
                    weights.append(0.8)
            along = ca[min(i + 1, len(ca) - 1)] - ca[max(i - 1, 0)]
            side = np.cross(along, [0.0, 0.0, 1.0])
            side = side / (np.linalg.norm(side) + 1e-12) * (1 if i % 2 else -1)
            centres.append(p + 2.4 * side)
            weights.append(0.6)
    nx_, ny, nz = shape_xyz
    z, y, x = np.meshgrid(
        *(np.arange(n) * voxel_A + o for n, o in zip((nz, ny, nx_), origin[::-1], strict=True)),
        indexing="ij",
    )
    data = np.zeros((nz, ny, nx_), dtype=np.float64)
    for c, w in zip(centres, weights, strict=True):
        data += w * np.exp(
            -((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * sigma_A**2)
        )
    return VoxelMap(
        data=data.astype(np.float32), voxel_size=(voxel_A,) * 3, origin=origin, map_id="chain"
    )


def model_of(chains: list[np.ndarray]) -> AtomicModel:
    labels = [f"{chr(65 + c)}/{i + 1}" for c, ca in enumerate(chains) for i in range(len(ca))]
    ca = np.concatenate(chains)
    return AtomicModel(ca=ca, ca_labels=labels, heavy=ca, source="synthetic")


@pytest.fixture(scope="module")
def chain() -> np.ndarray:
    return chain_ca()


@pytest.fixture(scope="module")
def chain_field(chain) -> SplineDensityMap:
    return SplineDensityMap(backbone_density([chain]))


@pytest.fixture(scope="module")
def chain_graph(chain_field) -> DensityGraph:
    return backbone_graph(chain_field, resolution_A=3.0)


# ---------------------------------------------------------------------------- method
def test_ridge_points_lie_on_the_backbone_not_beside_it(chain, chain_field):
    points, values = ridge_points(chain_field, threshold=0.3)
    assert len(points) > 150
    # Distance to the C-alpha trace (segments): a ridge runs along the tube's centre line.
    seg_a, seg_b = chain[:-1], chain[1:]
    d = seg_b - seg_a
    t = np.clip(
        np.einsum("pkj,kj->pk", points[:, None] - seg_a[None], d) / np.einsum("kj,kj->k", d, d),
        0,
        1,
    )
    dist = np.linalg.norm(points[:, None] - (seg_a + t[..., None] * d), axis=2).min(axis=1)
    # Measured: median 0.99 Å, 90th percentile 2.3 Å (the side-chain ridges, 2.4 Å away);
    # grid points that did not start near a ridge would spread up to the 0.3 contour.
    assert np.median(dist) < 1.3 and np.percentile(dist, 90) < 2.7
    assert np.all(values[:, 0] >= 0.3)


def test_about_one_node_per_residue_on_the_chain(chain, chain_graph):
    r = evaluate_graph(chain_graph, model_of([chain]))
    # Measured: 25 nodes for 22 C-alphas, recall 1.0, one-to-one precision 0.88, RMSD 0.59 Å
    # (the junctions of the side chains anchor the nodes at the C-alphas).
    assert 0.9 <= r["nodes_per_ca"] <= 1.25
    assert r["recall"] >= 0.95
    assert r["one_to_one_precision"] >= 0.8
    assert r["f1"] >= 0.85
    assert r["rmsd"] < 0.9


def test_edges_follow_the_chain(chain, chain_graph):
    r = evaluate_graph(chain_graph, model_of([chain]))
    # Measured: chain recall 0.90, edge precision 0.79, one component, degrees 1 and 2 (and 3
    # at three side-chain ends that survived pruning).
    assert r["chain_recall"] >= 0.85
    assert r["edge_precision"] >= 0.7
    assert nx.number_connected_components(chain_graph.graph) == 1
    degrees = [d for _, d in chain_graph.graph.degree]
    assert max(degrees) <= 3 and np.mean(np.array(degrees) == 2) > 0.6  # measured 17 of 25
    assert chain_graph.graph.graph["method"] == "backbone"
    lengths = chain_graph.edge_lengths
    assert 3.4 <= np.median(lengths) <= 4.2  # measured 3.84 Å (C-alphas: 3.8 Å)


def test_two_chains_apart_stay_apart():
    a = chain_ca(14, start=(6.0, 8.0, 6.0))
    b = chain_ca(14, start=(6.0, 8.0, 18.0))  # 12 Å above: no density between
    field = SplineDensityMap(backbone_density([a, b], shape_xyz=(50, 40, 26)))
    graph = backbone_graph(field)
    assert nx.number_connected_components(graph.graph) == 2
    r = evaluate_graph(graph, model_of([a, b]))
    assert r["recall"] >= 0.9 and r["edge_precision"] >= 0.6


def test_gap_bridged_only_where_density_stays_high():
    positions = np.array([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0, 0], [11.4, 0, 0]])
    edges = np.array([[0, 1], [2, 3]])
    tube = backbone_density([positions], shape_xyz=(20, 10, 10), origin=(-4.0, -5.0, -5.0))
    field = SplineDensityMap(tube)
    joined = bridge_gaps(positions, edges, field, max_gap_A=4.6, min_density=0.1)
    assert [1, 2] in joined.tolist()
    # The same ends with nothing between them (two separate blobs pairs): no bridge.
    empty = tube.data.copy()
    xs = tube.origin[0] + np.arange(tube.shape_xyz[0]) * tube.voxel_size[0]
    empty[:, :, (xs > 4.5) & (xs < 6.9)] = 0.0
    field = SplineDensityMap(VoxelMap(data=empty, voxel_size=tube.voxel_size, origin=tube.origin))
    assert [1, 2] not in bridge_gaps(
        positions, edges, field, max_gap_A=4.6, min_density=0.1
    ).tolist()
    # Too far apart: no bridge either.
    assert (
        len(bridge_gaps(positions, edges, SplineDensityMap(tube), max_gap_A=3.0, min_density=0.1))
        == 2
    )


def test_ball_maximum_equals_a_full_footprint_filter():
    import scipy.ndimage

    rng = np.random.default_rng(0)
    data = rng.random((12, 14, 16)).astype(np.float32)
    radius = np.array([3.3, 2.2, 4.1])
    half = np.floor(radius).astype(int)
    zz, yy, xx = np.mgrid[-half[2] : half[2] + 1, -half[1] : half[1] + 1, -half[0] : half[0] + 1]
    ball = (xx / radius[0]) ** 2 + (yy / radius[1]) ** 2 + (zz / radius[2]) ** 2 <= 1
    full = scipy.ndimage.maximum_filter(data, footprint=ball, mode="constant", cval=-np.inf)
    centres = np.argwhere(np.ones(data.shape, dtype=bool))
    np.testing.assert_array_equal(ball_maximum(data, radius, centres), full[tuple(centres.T)])


def test_empty_map_gives_an_empty_graph_and_a_warning(caplog):
    vmap = VoxelMap(
        data=np.zeros((10, 10, 10), dtype=np.float32) + 0.01,
        voxel_size=(1, 1, 1),
        origin=(0, 0, 0),
        map_id="flat-map",
    )
    vmap.data[5, 5, 5] = 1.0  # one voxel: a blob, no ridge of any length
    field = SplineDensityMap(vmap)
    with caplog.at_level(logging.WARNING):
        graph = backbone_graph(field, seed_threshold=5.0)
    assert len(graph) == 0 and graph.graph.number_of_edges() == 0
    assert "flat-map" in caplog.text


# ---------------------------------------------------------------------------- fields
def test_generic_hessian_matches_the_spline_analytic_one(chain_field):
    rng = np.random.default_rng(1)
    lo, hi = chain_field.bounds
    points = lo + 2 + rng.random((300, 3)) * (hi - lo - 4)
    analytic = chain_field.get_hessians(points)
    differences = VolumeField._evaluate_hessians(chain_field, points)
    scale = np.abs(analytic).max()
    # Measured: max difference 3.6e-3 of the largest entry (step 0.05 voxels, sigma 1 voxel).
    assert np.abs(analytic - differences).max() < 1e-2 * scale
    assert np.allclose(analytic, analytic.transpose(0, 2, 1))
    assert np.all(np.isnan(chain_field.get_hessians(np.array([[-50.0, 0, 0]]))))


def test_backbone_works_on_the_fourier_field(chain):
    field = FourierDensityMap(backbone_density([chain]))
    r = evaluate_graph(build_graph(field, method="backbone"), model_of([chain]))
    assert r["recall"] >= 0.85 and r["chain_recall"] >= 0.8


def test_backbone_works_on_the_learned_field(chain):
    pytest.importorskip("torch")
    from neural_em.fields.learned import LearnedDensityMap

    field = LearnedDensityMap(backbone_density([chain]))
    r = evaluate_graph(build_graph(field, method="backbone"), model_of([chain]))
    # Measured: 23 nodes, recall 1.0, chain recall 0.95 (Fourier: 26, 1.0, 1.0).
    assert r["recall"] >= 0.85 and r["chain_recall"] >= 0.8


def test_backbone_from_a_field_file(chain, chain_field, tmp_path):
    path = chain_field.save(tmp_path / "chain.neural")
    out = tmp_path / "g.graph.json"
    assert main(["graph", str(path), "--method", "backbone", "-o", str(out)]) == 0
    graph = DensityGraph.load(out)
    assert graph.graph.graph["method"] == "backbone"
    assert evaluate_graph(graph, model_of([chain]))["recall"] >= 0.9


def test_backbone_works_on_a_neural_field():
    from neural_em.fields.neural import NeuralDensityMap

    short = chain_ca(9, start=(5.0, 6.0, 8.0))  # about 25 x 14 x 3 Å
    field = NeuralDensityMap.from_voxel_data(
        backbone_density([short], shape_xyz=(34, 24, 16)), max_epochs=150, seed=0
    )
    graph = build_graph(field, method="backbone")
    r = evaluate_graph(graph, model_of([short]))
    assert graph.graph.graph["field_kind"] == "neural"
    # Measured (a short fit, 150 epochs): 7 nodes, recall 0.78, chain recall 1.0.
    assert r["recall"] >= 0.65 and r["chain_recall"] >= 0.6


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "override",
    [
        {"node_spacing_A": -1.0},
        {"link_A": 0.0},
        {"score_radius_A": float("nan")},
        {"score_fraction": 1.5},
        {"ridge_iterations": -2},
        {"node_spacing_A": 5.0},  # above node_max_A
        {"curvature_straight": 0.5},  # above curvature_curved
        {"anchor_weight": -1.0},
    ],
)
def test_bad_parameters_are_refused_before_any_work(override, tmp_path):
    with pytest.raises(InputError):
        BackboneParameters(**override)
    # graph_from_map refuses them before it reads (or fits) the map: the file is not there.
    with pytest.raises(InputError, match=next(iter(override))):
        graph_from_map(tmp_path / "absent.mrc", method="backbone", backbone=override)


def test_bad_resolution_and_method_are_refused(chain_field):
    with pytest.raises(InputError, match="resolution"):
        build_graph(chain_field, method="backbone", resolution_A=0)
    with pytest.raises(InputError, match="method"):
        build_graph(chain_field, method="mesh")
    with pytest.raises(InputError, match="study"):
        build_graph(chain_field, method="backbone", adjacency_A=6.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--method", "backbone", "--node-spacing", "-2"],
        ["--method", "backbone", "--resolution", "0"],
        ["--method", "backbone", "--adjacency", "6"],
        ["--method", "study", "--prune", "3"],
    ],
)
def test_cli_refuses_bad_options_with_exit_2(argv, chain_field, tmp_path, capsys):
    path = tmp_path / "chain.mrc"
    write_map(path, chain_field.to_voxel_density_map())
    out = tmp_path / "g.graph.json"
    with pytest.raises(SystemExit) as exc:
        code = main(["graph", str(path), "-o", str(out), *argv])
        raise SystemExit(code)
    assert exc.value.code == 2
    assert not out.exists()


# ---------------------------------------------------------------------------- exports
def test_mmcif_writes_paths_as_ca_pseudo_chains(chain_graph, tmp_path):
    path = chain_graph.save_as_mmcif(tmp_path / "g.cif")
    st = gemmi.read_structure(str(path))
    atoms = [
        (ch.name, res.seqid.num, res.name, atom.name, atom.pos, atom.b_iso)
        for ch in st[0]
        for res in ch
        for atom in res
    ]
    assert len(atoms) == len(chain_graph)
    assert {a[2] for a in atoms} == {"UNK"} and {a[3] for a in atoms} == {"CA"}
    pos = chain_graph.positions
    index = {tuple(np.round(p, 3)): k for k, p in enumerate(pos)}
    node_of = [index[tuple(np.round([a[4].x, a[4].y, a[4].z], 3))] for a in atoms]
    # Consecutive residues of a chain are joined by an edge of the graph; B-factor = density.
    ids = chain_graph.node_ids
    for (c1, s1, *_), (c2, s2, *_), k1, k2 in zip(
        atoms, atoms[1:], node_of, node_of[1:], strict=False
    ):
        if c1 == c2:
            assert s2 == s1 + 1 and chain_graph.graph.has_edge(ids[k1], ids[k2])
    np.testing.assert_allclose([a[5] for a in atoms], chain_graph.densities[node_of], rtol=1e-4)
    # Every edge is either along a chain or a struct_conn.
    along = sum(1 for a, b in zip(atoms, atoms[1:], strict=False) if a[0] == b[0])
    assert along + len(st.connections) == chain_graph.graph.number_of_edges()
    assert len(st[0]) < len(chain_graph) / 3  # long pseudo-chains, not one per node


def test_trace_paths_cover_every_node_once():
    g = nx.Graph()
    g.add_edges_from([(0, 1), (1, 2), (2, 3), (2, 4), (4, 5), (6, 7)])
    g.add_node(8)
    for n in g.nodes:
        g.nodes[n].update(x=float(n), y=0.0, z=0.0, density=1.0)
    graph = DensityGraph(g)
    paths = trace_paths(graph)
    assert sorted(k for p in paths for k in p) == list(range(9))
    for p in paths:
        for a, b in zip(p, p[1:], strict=False):
            assert g.has_edge(a, b)
    assert [0, 1, 2, 3] in paths or [0, 1, 2, 4, 5] in paths


def test_json_graphml_npz_carry_the_edges(chain_graph, tmp_path):
    chain_graph.save(tmp_path / "g.json")
    back = DensityGraph.load(tmp_path / "g.json")
    assert back.graph.graph["method"] == "backbone"
    np.testing.assert_array_equal(back.edge_index, chain_graph.edge_index)
    chain_graph.save_as_graphml(tmp_path / "g.graphml")
    assert (
        nx.read_graphml(tmp_path / "g.graphml").number_of_edges()
        == chain_graph.graph.number_of_edges()
    )
    chain_graph.save_as_npz(tmp_path / "g.npz")
    arrays = load_npz(tmp_path / "g.npz")
    assert arrays["edge_index"].shape[1] == chain_graph.graph.number_of_edges()
    data = json.loads((tmp_path / "g.json").read_text())
    assert all("score" in node for node in data["nodes"])


# ---------------------------------------------------------------------------- metrics
def test_chain_metrics_by_hand():
    ca = np.array([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0, 0], [11.4, 0, 0], [30.0, 0, 0]])
    model = AtomicModel(ca=ca, ca_labels=["A/1", "A/2", "A/3", "A/4", "A/9"], heavy=ca)
    assert consecutive_pairs(model).tolist() == [[0, 1], [1, 2], [2, 3]]  # A/9 is 18.6 Å on
    nodes = ca[:4] + [0.3, 0, 0]
    nodes = np.vstack([nodes, [[3.8, 8.0, 0]]])  # one node far from any C-alpha
    edges = np.array([[0, 1], [1, 2], [2, 4], [0, 2]])
    r = edge_metrics(model, nodes, edges)
    # pairs (0,1), (1,2), (2,3) all matched; edges 0-1 and 1-2 join two of them.
    assert r["chain_pairs"] == 3
    assert r["chain_recall"] == pytest.approx(2 / 3)
    assert r["edge_precision"] == pytest.approx(2 / 4)
    assert r["mean_degree"] == pytest.approx(8 / 5)


def test_one_to_one_precision_does_not_reward_oversampling():
    from neural_em.graph.evaluate import point_metrics

    ca = np.array([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0, 0]])
    nodes = np.vstack([ca, ca + [0, 1.0, 0], ca + [0, -1.0, 0]])  # three nodes per C-alpha
    r = point_metrics(ca, nodes)
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    assert r["one_to_one_precision"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- real maps
@pytest.mark.parametrize(
    "map_rel, model_rel, res, floors",
    [
        # floors: recall, one-to-one precision, chain recall, edge precision (measured 0.977 /
        # 0.771 / 0.909 / 0.699 and 0.990 / 0.817 / 0.951 / 0.796 on the project's CPU machine).
        ("emd_3488/emd_3488.mrc", "emd_3488/5ni1.cif", 3.2, (0.94, 0.73, 0.87, 0.65)),
        ("emd_6272/emd_6272_zone.mrc", "emd_6272/3j9s.pdb", 2.6, (0.95, 0.77, 0.90, 0.74)),
    ],
)
def test_real_maps(map_rel, model_rel, res, floors):
    path, model = shared_file(map_rel), shared_file(model_rel)
    graph = graph_from_map(path, method="backbone", resolution_A=res)
    r = evaluate_graph(graph, model)
    assert r["recall"] >= floors[0]
    assert r["one_to_one_precision"] >= floors[1]
    assert r["chain_recall"] >= floors[2]
    assert r["edge_precision"] >= floors[3]
    assert 0.9 <= r["nodes_per_ca"] <= 1.3
