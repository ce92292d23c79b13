"""Density graphs: exact node positions on synthetic maps, clustering and edges against brute
force, files (JSON, mmCIF, GraphML, npz) and their refusal of malformed input, determinism,
the command line, and real maps from ../shared/data."""

from __future__ import annotations

import importlib.util
import json
import pickle
import zipfile
from pathlib import Path

import gemmi
import networkx as nx
import numpy as np
import pytest
from helpers import gaussian_blobs, hot_voxel_map, shared_file
from scipy.spatial.distance import cdist

from neural_em.cli.main import main
from neural_em.errors import InputError
from neural_em.fields.spline import SplineDensityMap
from neural_em.graph import (
    DensityGraph,
    cluster_points,
    graph_from_map,
    radius_edges,
    walk_uphill,
)
from neural_em.graph.export import load_graphml, load_npz, npz_to_networkx
from neural_em.graph.mmcif import RESIDUES_PER_CHAIN, chain_name
from neural_em.graph.seeds import default_seed_threshold, small_component_mask
from neural_em.voxelmap import write_map

CENTRES = np.array(
    [[5.3, 6.1, 4.7], [12.2, 7.4, 9.9], [8.6, 15.3, 6.2], [17.1, 14.8, 12.4], [6.6, 9.2, 14.1]]
)


@pytest.fixture(scope="module")
def blob_field() -> SplineDensityMap:
    return SplineDensityMap(gaussian_blobs(CENTRES, shape_xyz=(24, 22, 20), sigma_A=1.5))


@pytest.fixture(scope="module")
def blob_graph(blob_field) -> DensityGraph:
    return DensityGraph.from_field(blob_field, adjacency_threshold=12.0, min_num_nodes=1)


@pytest.fixture(scope="module")
def chain_field() -> SplineDensityMap:
    """Twelve blobs 3.8 Å apart along a bent line: one connected component."""
    t = np.arange(12)
    centres = np.stack([4.0 + 3.8 * 0.8 * t, 10.0 + 3.8 * 0.6 * t, 9.0 + np.sin(t)], axis=1)
    centres[:, 2] = 9.0 + 0.3 * np.sin(t)
    return SplineDensityMap(
        gaussian_blobs(centres, shape_xyz=(46, 40, 18), sigma_A=1.2, origin=(-3.0, 2.0, 1.0))
    )


# ---------------------------------------------------------------------------- positions
def test_blob_nodes_at_blob_centres(blob_graph):
    pos = blob_graph.positions
    assert len(pos) == len(CENTRES)
    d = cdist(pos, CENTRES)
    # each node at its own blob: measured 0.018-0.023 Å (walk step 0.05 Å, spline shift)
    assert np.all(d.min(axis=1) < 0.04)
    assert sorted(d.argmin(axis=1).tolist()) == list(range(len(CENTRES)))
    attrs = blob_graph.graph.nodes[0]
    assert set(attrs) == {"x", "y", "z", "density", "gradient_norm"}
    assert 0.9 < attrs["density"] < 1.1  # the spline peak may exceed the sampled maximum
    assert attrs["gradient_norm"] < 0.05  # at a maximum


def test_graph_attributes_and_timings(blob_graph):
    g = blob_graph.graph
    assert isinstance(g, nx.Graph) and g.graph["map_id"] == "blobs"
    assert g.graph["adjacency_A"] == 12.0 and g.graph["seed_spacing_A"] == 0.5
    assert set(blob_graph.timings) >= {"seeding", "walking", "clustering", "edges", "total"}
    assert blob_graph.stats["capped"] == 0 and blob_graph.stats["seeds"] > 100
    for a, b, data in g.edges(data=True):
        pa = np.array([g.nodes[a][k] for k in "xyz"])
        pb = np.array([g.nodes[b][k] for k in "xyz"])
        assert data["length"] == pytest.approx(np.linalg.norm(pa - pb), abs=1e-9)
        assert data["length"] <= 12.0


def test_hot_voxel_lands_at_its_world_position(tmp_path):
    """One hot voxel at x=1, y=2, z=3 (anisotropic voxels, non-zero origin): through write,
    read, the spline field and the graph it lands at origin + (1, 2, 3) * voxel size."""
    vmap = hot_voxel_map()
    path = write_map(tmp_path / "hot.mrc", vmap)
    field = SplineDensityMap.from_voxel_map(path)
    graph = DensityGraph.from_field(field, seed_threshold=0.5, min_num_nodes=1)
    expected = np.array([10.0, -4.0, 2.5]) + np.array([1, 2, 3]) * np.array([1.1, 0.9, 1.3])
    assert len(graph) == 1
    # the walk stops within one 0.05 Å step of the maximum (measured 0.049 Å in x)
    assert np.linalg.norm(graph.positions[0] - expected) < 0.06


def test_default_seed_threshold(blob_field):
    norm = blob_field.normalisation
    assert default_seed_threshold(blob_field) == pytest.approx(max(0.1, norm.mean + 3 * norm.std))
    blob_field_copy = SplineDensityMap(gaussian_blobs(CENTRES[:1], shape_xyz=(12, 12, 12)))
    expected = default_seed_threshold(blob_field_copy)
    blob_field_copy.normalisation = None  # a field without a record is sampled instead
    assert default_seed_threshold(blob_field_copy) == pytest.approx(expected, rel=1e-5)


def test_small_components_dropped(chain_field):
    full = DensityGraph.from_field(chain_field, adjacency_threshold=4.5, min_num_nodes=10)
    assert len(full) == 12 and nx.is_connected(full.graph)
    none = DensityGraph.from_field(chain_field, adjacency_threshold=4.5, min_num_nodes=13)
    assert len(none) == 0 and none.graph.number_of_edges() == 0
    split = DensityGraph.from_field(chain_field, adjacency_threshold=2.0, min_num_nodes=1)
    assert len(split) == 12 and split.graph.number_of_edges() == 0


def test_small_component_mask():
    edges = np.array([[0, 1], [1, 2], [3, 4]])
    assert small_component_mask(6, edges, 3).tolist() == [True] * 3 + [False] * 3
    assert small_component_mask(6, edges, 1).all()


def test_walk_reports_capped_seeds(blob_field):
    pts, vals = blob_field.sample_points(1.0, density_threshold=0.3)
    ends, steps, capped = walk_uphill(blob_field, pts, vals, max_steps=3)
    assert capped.sum() > 0 and steps.max() == 3
    assert np.all(capped == (steps == 3)) or capped.sum() <= np.count_nonzero(steps == 3)
    ends2, steps2, capped2 = walk_uphill(
        blob_field, pts, vals, max_steps=400, batch_size=37, threads=2
    )
    assert not capped2.any()
    ends1, steps1, _ = walk_uphill(blob_field, pts, vals, max_steps=400)
    np.testing.assert_array_equal(ends1, ends2)  # batching and threads change nothing
    np.testing.assert_array_equal(steps1, steps2)
    dens = blob_field.get_densities(ends1)
    assert np.all(dens >= vals[:, 0])  # every walk only went uphill


def test_walk_stops_at_box_edge():
    # density rising towards the x = max face: walks stop inside the box, never NaN
    data = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (6, 6, 1))
    field = SplineDensityMap.from_voxel_data(data)
    pts, vals = field.sample_points(0.5, density_threshold=0.5)
    ends, _, capped = walk_uphill(field, pts, vals)
    assert np.all(np.isfinite(ends)) and np.all(field.contains(ends)) and not capped.any()


# ---------------------------------------------------------------------------- clustering
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_equals_dbscan(seed):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(seed)
    # clumps of various tightness plus uniform noise: chains of near points matter
    centres = rng.uniform(0, 6, size=(25, 3))
    clumps = np.concatenate(
        [c + rng.normal(scale=rng.uniform(0.02, 0.25), size=(60, 3)) for c in centres]
    )
    pts = np.concatenate([clumps, rng.uniform(0, 6, size=(800, 3))])
    for eps in (0.2, 0.35):
        ours = cluster_points(pts, eps)
        ref = sklearn_cluster.DBSCAN(eps=eps, min_samples=1).fit(pts).labels_
        # the same partition: a one-to-one map between labels
        pairs = set(zip(ours.tolist(), ref.tolist(), strict=True))
        assert len(pairs) == len(set(ours.tolist())) == len(set(ref.tolist()))
        assert ours[0] == 0 and np.all(np.diff(np.unique(ours, return_index=True)[1]) > 0)


def test_cluster_small_budget_and_edge_cases():
    rng = np.random.default_rng(5)
    pts = rng.normal(scale=0.3, size=(500, 3))
    np.testing.assert_array_equal(
        cluster_points(pts, 0.2, pair_budget=50), cluster_points(pts, 0.2)
    )
    assert cluster_points(np.zeros((0, 3)), 0.2).shape == (0,)
    assert cluster_points(np.zeros((5, 3)), 0.2).tolist() == [0] * 5
    # exactly eps apart joins (DBSCAN uses <=), just over does not
    line = np.array([[0.0, 0, 0], [0.25, 0, 0], [0.6, 0, 0]])
    assert cluster_points(line, 0.25).tolist() == [0, 0, 1]
    with pytest.raises(InputError):
        cluster_points(np.array([[np.nan, 0, 0]]), 0.2)


def test_radius_edges_match_brute_force():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 20, size=(300, 3))
    edges = radius_edges(pts, 4.0)
    d = cdist(pts, pts)
    i, j = np.nonzero(np.triu(d <= 4.0, k=1))
    np.testing.assert_array_equal(edges, np.stack([i, j], axis=1))
    assert radius_edges(pts[:1], 4.0).shape == (0, 2)


# ---------------------------------------------------------------------------- determinism
def test_graphs_of_the_same_field_are_identical(chain_field, tmp_path):
    a = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    b = DensityGraph.from_field(chain_field, adjacency_threshold=4.5, threads=2, batch_size=1000)
    assert nx.utils.graphs_equal(a.graph, b.graph)
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


# ---------------------------------------------------------------------------- files
def test_json_round_trip(chain_field, tmp_path):
    g = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    path = g.save(tmp_path / "g.graph.json")
    back = DensityGraph.load(path)
    assert nx.utils.graphs_equal(g.graph, back.graph)
    data = json.loads(path.read_text())
    assert nx.utils.graphs_equal(nx.node_link_graph(data, edges="edges"), g.graph)
    with pytest.raises(FileExistsError):
        g.save(path)
    g.save(path, overwrite=True)


def test_mmcif_opens_in_gemmi(chain_field, tmp_path):
    g = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    path = g.save_as_mmcif(tmp_path / "g.cif")
    st = gemmi.read_structure(str(path))
    atoms = [a for ch in st[0] for r in ch for a in r]
    assert len(atoms) == len(g) == 12
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for a in atoms])
    assert np.abs(xyz - g.positions).max() < 0.001
    dens = np.array([a.b_iso for a in atoms])
    assert np.abs(dens - g.densities).max() < 1e-5
    assert len({(r.seqid.num, ch.name) for ch in st[0] for r in ch}) == len(g)
    assert len(st.connections) == g.graph.number_of_edges()
    bonded = {
        tuple(sorted((c.partner1.res_id.seqid.num, c.partner2.res_id.seqid.num)))
        for c in st.connections
    }
    assert bonded == {(a + 1, b + 1) for a, b in g.edge_index.T}
    no_bonds = g.save_as_mmcif(tmp_path / "n.cif", include_bonds=False)
    assert len(gemmi.read_structure(str(no_bonds)).connections) == 0
    doc = gemmi.cif.read(str(path))  # also valid plain CIF
    assert doc.sole_block().find_value("_neural_em_graph.nodes") == "12"


def test_mmcif_large_graph_numbering(tmp_path):
    n = 2 * RESIDUES_PER_CHAIN + 5
    rng = np.random.default_rng(0)
    pos = rng.uniform(-500, 500, size=(n, 3))
    g = DensityGraph.from_arrays(
        pos, rng.uniform(0, 1, n), None, np.array([[0, n - 1]]), attrs={"map_id": "big"}
    )
    st = gemmi.read_structure(str(g.save_as_mmcif(tmp_path / "big.cif")))
    assert st[0].count_atom_sites() == n
    assert [ch.name for ch in st[0]] == ["A", "B", "C"]
    assert max(r.seqid.num for ch in st[0] for r in ch) == RESIDUES_PER_CHAIN
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for ch in st[0] for r in ch for a in r])
    assert np.abs(xyz - pos).max() < 0.001
    con = st.connections[0]
    assert (con.partner2.chain_name, con.partner2.res_id.seqid.num) == ("C", 5)


def test_chain_names():
    assert [chain_name(i) for i in (0, 25, 26, 27, 701, 702)] == ["A", "Z", "AA", "AB", "ZZ", "AAA"]


def test_graphml_round_trip(chain_field, tmp_path):
    g = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    back = load_graphml(g.save_as_graphml(tmp_path / "g.graphml"))
    assert sorted(back.nodes) == sorted(g.graph.nodes)
    assert {tuple(sorted(e)) for e in back.edges} == {tuple(sorted(e)) for e in g.graph.edges}
    assert back.nodes[3]["x"] == g.graph.nodes[3]["x"]
    assert json.loads(back.graph["voxel_size"]) == g.graph.graph["voxel_size"]


def test_npz_round_trip(chain_field, tmp_path):
    g = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    path = g.save_as_npz(tmp_path / "g.npz")
    arrays = load_npz(path)
    assert arrays["positions"].shape == (12, 3) and arrays["features"].shape == (12, 2)
    assert arrays["edge_index"].shape == (2, g.graph.number_of_edges())
    assert arrays["edge_length"].shape == (g.graph.number_of_edges(),)
    np.testing.assert_array_equal(arrays["positions"], g.positions)
    assert list(arrays["feature_names"]) == ["density", "gradient_norm"]
    assert nx.utils.graphs_equal(npz_to_networkx(path), g.graph)
    assert nx.utils.graphs_equal(DensityGraph.load_npz(path).graph, g.graph)
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, no pickled objects
        assert all(npz[k].dtype != object for k in npz.files)


# ---------------------------------------------------------------------------- refusals
def _good_json(tmp_path) -> dict:
    g = DensityGraph.from_arrays(
        np.eye(3) * 3.8,
        [0.5, 0.6, 0.7],
        [0.1, 0.1, 0.1],
        np.array([[0, 1], [1, 2]]),
        attrs={"map_id": "m"},
    )
    return json.loads(g.save(tmp_path / "good.json").read_text())


@pytest.mark.parametrize(
    "case",
    [
        "nan-coordinate",
        "string-coordinate",
        "bool-coordinate",
        "missing-z",
        "nodes-not-list",
        "edge-to-unknown-node",
        "self-loop",
        "duplicate-edge",
        "negative-length",
        "string-id",
        "duplicate-id",
        "directed",
        "top-level-list",
        "future-version",
        "wrong-format",
        "nested-attribute",
        "map-id-number",
        "infinity-density",
    ],
)
def test_malformed_json_refused(tmp_path, case):
    data = _good_json(tmp_path)
    text = None
    if case == "nan-coordinate":
        text = json.dumps(data).replace('"x": 3.8', '"x": NaN', 1)
        assert "NaN" in text
    elif case == "string-coordinate":
        data["nodes"][0]["x"] = "3.8"
    elif case == "bool-coordinate":
        data["nodes"][0]["y"] = True
    elif case == "missing-z":
        del data["nodes"][1]["z"]
    elif case == "nodes-not-list":
        data["nodes"] = {"0": {}}
    elif case == "edge-to-unknown-node":
        data["edges"][0]["target"] = 7
    elif case == "self-loop":
        data["edges"][0]["target"] = data["edges"][0]["source"]
    elif case == "duplicate-edge":
        data["edges"].append(dict(data["edges"][0]))
    elif case == "negative-length":
        data["edges"][0]["length"] = -1.0
    elif case == "string-id":
        data["nodes"][0]["id"] = "0"
    elif case == "duplicate-id":
        data["nodes"][1]["id"] = 0
    elif case == "directed":
        data["directed"] = True
    elif case == "top-level-list":
        data = [data]
    elif case == "future-version":
        data["graph"]["format_version"] = 99
    elif case == "wrong-format":
        data["graph"]["format"] = "something-else"
    elif case == "nested-attribute":
        data["nodes"][0]["extra"] = {"a": 1}
    elif case == "map-id-number":
        data["graph"]["map_id"] = 5
    elif case == "infinity-density":
        text = json.dumps(data).replace('"density": 0.5', '"density": Infinity', 1)
    path = tmp_path / "bad.json"
    path.write_text(text if text is not None else json.dumps(data))
    with pytest.raises(InputError) as info:
        DensityGraph.load(path)
    assert str(path) in str(info.value)


def test_non_json_files_refused(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name, content in (
        ("pickle.json", pickle.dumps(Evil())),
        ("empty.json", b""),
        ("binary.json", bytes(range(256))),
        ("trunc.json", b'{"nodes": ['),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError):
            DensityGraph.load(path)
    with pytest.raises(InputError):
        DensityGraph.load(tmp_path / "absent.json")
    assert not marker.exists()


def test_malformed_npz_refused(chain_field, tmp_path):
    g = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    good = load_npz(g.save_as_npz(tmp_path / "good.npz"))
    good["graph_attrs"] = np.array(json.dumps(good["graph_attrs"]))
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    def write(name, **changes):
        arrays = {**good, **changes}
        path = tmp_path / name
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return path

    nan_pos = good["positions"].copy()
    nan_pos[2, 1] = np.nan
    cases = [
        write("nan.npz", positions=nan_pos),
        write("shape.npz", positions=good["positions"][:, :2]),
        write("edge.npz", edge_index=good["edge_index"] + 100),
        write("loop.npz", edge_index=np.zeros((2, 1), dtype=np.int64), edge_length=np.zeros(1)),
        write("dtype.npz", positions=good["positions"].astype(str)),
        write("object.npz", positions=np.array([Evil()], dtype=object)),
        write("attrs.npz", graph_attrs=np.array("[1, 2")),
    ]
    missing = tmp_path / "missing.npz"
    with open(missing, "wb") as handle:
        np.savez(handle, positions=good["positions"])
    cases.append(missing)
    raw_pickle = tmp_path / "pickle.npz"
    raw_pickle.write_bytes(pickle.dumps(Evil()))
    cases.append(raw_pickle)
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("hello")
    cases.append(not_zip)
    broken = tmp_path / "broken.npz"
    broken.write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    cases.append(broken)
    for path in cases:
        with pytest.raises(InputError):
            npz_to_networkx(path)
    assert not marker.exists()
    assert zipfile.is_zipfile(tmp_path / "good.npz")


def test_bad_parameters_refused(blob_field):
    for kwargs in (
        {"adjacency_threshold": 0},
        {"adjacency_threshold": float("nan")},
        {"min_num_nodes": 0},
        {"step_A": -1},
        {"refine": "magic"},
        {"seed_threshold": float("inf")},
        {"max_steps": 0},
    ):
        with pytest.raises(InputError):
            DensityGraph.from_field(blob_field, **kwargs)
    with pytest.raises(InputError):
        DensityGraph.from_field(np.zeros((4, 4, 4)))


def test_empty_graph_files(blob_field, tmp_path):
    g = DensityGraph.from_field(blob_field, seed_threshold=2.0)  # no seeds
    assert len(g) == 0 and g.stats["seeds"] == 0
    assert len(DensityGraph.load(g.save(tmp_path / "e.json"))) == 0
    assert nx.utils.graphs_equal(npz_to_networkx(g.save_as_npz(tmp_path / "e.npz")), g.graph)
    st = gemmi.read_structure(str(g.save_as_mmcif(tmp_path / "e.cif")))
    assert sum(m.count_atom_sites() for m in st) == 0


# ---------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def chain_map(tmp_path_factory, chain_field) -> Path:
    path = tmp_path_factory.mktemp("cli") / "chain.mrc"
    return write_map(path, chain_field.to_voxel_density_map())


def test_cli_graph_writes_all_outputs(chain_map, tmp_path, capsys):
    out = tmp_path / "c.graph.json"
    args = [
        "graph",
        str(chain_map),
        "--resolution",
        "2.25",
        "-o",
        str(out),
        "--mmcif",
        str(tmp_path / "c.cif"),
        "--graphml",
        str(tmp_path / "c.graphml"),
        "--npz",
        str(tmp_path / "c.npz"),
    ]
    assert main(args) == 0
    assert "12 nodes" in capsys.readouterr().out
    g = DensityGraph.load(out)
    assert len(g) == 12 and g.graph.graph["adjacency_A"] == 4.5
    assert g.graph.graph["resolution_A"] == 2.25
    assert nx.utils.graphs_equal(npz_to_networkx(tmp_path / "c.npz"), g.graph)
    assert main(args) == 2  # outputs exist
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--force", "--adjacency", "3.0"]) == 0
    assert DensityGraph.load(out).graph.graph["adjacency_A"] == 3.0


def test_cli_graph_from_field_file(chain_field, tmp_path):
    field_path = chain_field.save(tmp_path / "c.neural")
    out = tmp_path / "f.graph.json"
    assert main(["graph", str(field_path), "--adjacency", "4.5", "-o", str(out)]) == 0
    direct = DensityGraph.from_field(chain_field, adjacency_threshold=4.5)
    np.testing.assert_allclose(DensityGraph.load(out).positions, direct.positions, atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"not a map at all" * 100, b"\x80\x04K\x01."])
def test_cli_graph_bad_input_exit_2(tmp_path, capsys, content):
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(content)
    assert main(["graph", str(bad), "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.mrc" in err
    assert not (tmp_path / "o.json").exists()


def test_cli_graph_bad_options_exit_2(chain_map, tmp_path, capsys):
    out = str(tmp_path / "o.json")
    assert main(["graph", str(tmp_path / "absent.mrc"), "-o", out]) == 2
    assert main(["graph", str(chain_map), "--min-nodes", "0", "-o", out]) == 2
    assert main(["graph", str(chain_map), "--contour", "1e9", "-o", out]) == 2
    assert main(["graph", str(chain_map), "-o", out, "--npz", out]) == 2
    with pytest.raises(SystemExit):
        main(["graph", str(chain_map), "--adjacency", "-1", "-o", out])
    capsys.readouterr()


# ---------------------------------------------------------------------------- neural field
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("neural_em.fields.neural") is None,
    reason="neural_em.fields.neural is not in this build",
)
def test_graph_from_neural_field():
    """The graph machinery on a (briefly trained) neural field: every node is a local
    maximum of that field to within one walk step, above the seed threshold."""
    from neural_em.fields.neural import NeuralDensityMap

    vmap = gaussian_blobs(CENTRES[:2], shape_xyz=(16, 16, 15), sigma_A=1.5)
    field = NeuralDensityMap.from_voxel_data(vmap, preset="fast", max_epochs=20)
    g = DensityGraph.from_field(
        field, seed_threshold=0.2, min_num_nodes=1, adjacency_threshold=12.0, devices=("cpu",)
    )
    assert g.graph.graph["field_kind"] == "neural" and len(g) >= 1
    pos = g.positions
    assert np.all(g.densities >= 0.2)
    for d in np.vstack([np.eye(3), -np.eye(3)]) * 0.1:
        moved = field.get_densities(pos + d)
        ok = np.isnan(moved) | (moved <= g.densities + 0.01)
        assert ok.all()


# ---------------------------------------------------------------------------- real maps
def test_real_map_graph_emd_21457():
    path = shared_file("emd_21457/emd_21457_seg.mrc")
    g = graph_from_map(path, adjacency_A=6.4)
    field = SplineDensityMap.from_voxel_map(path)
    assert 100 < len(g) < 1000
    assert np.all(field.contains(g.positions))
    assert np.all(g.densities >= g.graph.graph["seed_threshold"])
    assert all(d["length"] <= 6.4 for _, _, d in g.graph.edges(data=True))
    comps = [len(c) for c in nx.connected_components(g.graph)]
    assert min(comps) >= 10


def test_real_map_origin_conventions_agree():
    """The same density with its position in ORIGIN and in NSTART gives the same graph."""
    a = graph_from_map(shared_file("emd_21457/emd_21457_seg.mrc"))
    b = graph_from_map(shared_file("emd_21457/emd_21457_seg_nstart.mrc"))
    assert len(a) == len(b)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-3)


# ---------------------------------------------------------------------------- refinement
def test_ridge_refinement_drops_detached_satellites_only():
    """A chain of blobs 3.2 Å apart, a weaker blob 3.9 Å beside it (density gap between),
    and an equally weak blob far from everything: 'ridge' drops the satellite only."""
    t = np.arange(10)
    chain = np.stack([4 + 3.2 * t, np.full(10, 10.0), np.full(10, 8.0)], axis=1)
    satellite = np.array([[4 + 3.2 * 5, 13.9, 8.0]])
    lonely = np.array([[20.0, 22.0, 8.0]])
    centres = np.concatenate([chain, satellite, lonely])
    field = SplineDensityMap(
        gaussian_blobs(
            centres,
            shape_xyz=(40, 28, 16),
            sigma_A=1.1,
            amplitudes=np.array([1.0] * 10 + [0.6, 0.6]),
        )
    )
    kwargs = dict(seed_threshold=0.45, min_num_nodes=1, adjacency_threshold=4.0)
    plain = DensityGraph.from_field(field, **kwargs)
    ridge = DensityGraph.from_field(field, refine="ridge", **kwargs)
    assert cdist(plain.positions, centres).min(axis=0).max() < 0.06
    d = cdist(ridge.positions, centres).min(axis=0)
    assert np.all(d[:10] < 0.06) and d[11] < 0.06  # chain and the lonely blob kept
    assert d[10] > 3.0  # the satellite is gone
    assert ridge.stats["refine_dropped"] == 1 and len(ridge) == len(plain) - 1
    assert ridge.graph.graph["refine"] == "ridge"


def test_ridge_links_shallow_saddle_links_nodes_near_the_threshold():
    """Two maxima 2.5 Å apart with a saddle a few per cent below them, and a threshold just
    above the saddle: the saddle rule links them, the threshold alone would not; maxima 4.5 Å
    apart (a deep saddle) stay unlinked."""
    from neural_em.graph.refine import SADDLE_FRACTION, ridge_links, segment_minimum

    for gap, linked in ((2.5, True), (4.5, False)):
        centres = np.array([[10.0, 10.0, 8.0], [10.0 + gap, 10.0, 8.0]])
        field = SplineDensityMap(gaussian_blobs(centres, shape_xyz=(24, 20, 16), sigma_A=1.1))
        g = DensityGraph.from_field(
            field, seed_threshold=0.3, min_num_nodes=1, adjacency_threshold=5.0
        )
        assert len(g) == 2
        pos, dens = g.positions, g.densities
        saddle = segment_minimum(field, pos[:1], pos[1:])[0]
        assert (saddle >= SADDLE_FRACTION * dens.min()) == linked
        threshold = saddle + 0.005
        assert len(ridge_links(field, pos, threshold=threshold)) == 0
        with_saddle = ridge_links(field, pos, threshold=threshold, densities=dens)
        assert len(with_saddle) == int(linked)
        assert len(ridge_links(field, pos, threshold=saddle - 0.005, densities=dens)) == 1


def test_seed_cap_refuses_instead_of_exhausting_memory(blob_field):
    with pytest.raises(InputError, match="max_seeds"):
        DensityGraph.from_field(blob_field, seed_threshold=0.0, max_seeds=1000)


def test_field_grid_sampler_is_used(blob_graph):
    """Seeding goes through the field's grid hook (the spline's separable evaluation)."""

    class Sampled(SplineDensityMap):
        calls = 0

        def _grid_slab_densities(self, ax, ay, az):
            Sampled.calls += 1
            return super()._grid_slab_densities(ax, ay, az)

    field = Sampled(gaussian_blobs(CENTRES, shape_xyz=(24, 22, 20), sigma_A=1.5))
    g = DensityGraph.from_field(field, adjacency_threshold=12.0, min_num_nodes=1)
    assert Sampled.calls >= 1
    np.testing.assert_array_equal(g.positions, blob_graph.positions)
