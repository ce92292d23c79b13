"""One door to a graph (build_graph, graph_from_map), the deprecated constructor names, and
graph files carrying every node attribute (strings too) with the format picked by suffix."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from helpers import gaussian_blobs

import neural_em.graph as graph_pkg
from neural_em.errors import InputError
from neural_em.fields.spline import SplineDensityMap
from neural_em.graph import DensityGraph, build_graph, graph_from_map
from neural_em.graph.export import load_graphml, load_npz
from neural_em.voxelmap import write_map

CENTRES = np.array([[4.0 + 3.8 * k, 10.0, 8.0] for k in range(8)])


@pytest.fixture(scope="module")
def chain_map():
    return gaussian_blobs(CENTRES, shape_xyz=(40, 20, 16), sigma_A=1.2)


@pytest.fixture(scope="module")
def chain_field(chain_map):
    return SplineDensityMap(chain_map)


def test_the_door_is_exported():
    assert {"build_graph", "graph_from_map", "DensityGraph"} <= set(graph_pkg.__all__)
    assert not hasattr(graph_pkg.density_graph, "graph_of_map")
    assert not hasattr(graph_pkg.density_graph, "field_from_map")


def test_build_graph_is_from_field_and_checks_options(chain_field):
    a = build_graph(chain_field, adjacency_A=4.5, min_num_nodes=1)
    b = DensityGraph.from_field(chain_field, adjacency_threshold=4.5, min_num_nodes=1)
    assert nx.utils.graphs_equal(a.graph, b.graph) and len(a) >= len(CENTRES)
    for method, options, message in (
        ("ridge", {}, "method must be one of"),
        ("backbone", {"adjacency_A": 4.0}, "adjacency distance applies to the study"),
        ("backbone", {"refine": "ridge"}, "--refine applies to the study"),
        ("study", {"backbone": {"prune_A": 2.0}}, "backbone options apply"),
        ("backbone", {"backbone": {"no_such": 1.0}}, "unknown backbone option"),
        ("study", {"resolution_A": -1.0}, "resolution must be a positive"),
    ):
        with pytest.raises(InputError, match=message):
            build_graph(chain_field, method=method, **options)


def test_graph_from_map_checks_before_fitting_and_records_the_fit(chain_map, tmp_path):
    write_map(tmp_path / "m.mrc", chain_map)
    with pytest.raises(InputError, match="method must be one of"):
        graph_from_map(tmp_path / "absent.mrc", method="ridge")  # refused before reading
    g = graph_from_map(tmp_path / "m.mrc", adjacency_A=4.5, min_num_nodes=1, contour=0.0)
    assert g.timings["field"] > 0 and g.graph.graph["contour"] == 0.0
    assert g.graph.graph["source"] == str(tmp_path / "m.mrc")
    with pytest.raises(InputError, match="field must be one of"):
        graph_from_map(tmp_path / "m.mrc", field="cubic")


def test_old_names_warn_and_give_the_same_graph(chain_field, chain_map, tmp_path):
    new = DensityGraph.from_field(chain_field, adjacency_threshold=4.5, min_num_nodes=1)
    with pytest.warns(DeprecationWarning, match="from_field"):
        old = DensityGraph.from_neural_density_map(
            chain_field, adjacency_threshold=4.5, min_num_nodes=1
        )
    assert nx.utils.graphs_equal(old.graph, new.graph)
    write_map(tmp_path / "m.mrc", chain_map)
    with pytest.warns(DeprecationWarning, match="graph_from_map"):
        old = DensityGraph.from_voxel_density_map(
            tmp_path / "m.mrc", adjacency_threshold=4.5, min_num_nodes=1
        )
    door = graph_from_map(tmp_path / "m.mrc", adjacency_A=4.5, min_num_nodes=1)
    assert nx.utils.graphs_equal(old.graph, door.graph)


def _with_string_attribute(g: DensityGraph) -> DensityGraph:
    labels = ["helix", "strand", "coil"]
    for k, node in enumerate(g.node_ids):
        g.graph.nodes[node]["sse"] = labels[k % 3]
        g.graph.nodes[node]["score"] = 0.5 * k
        if k % 2:
            g.graph.nodes[node]["flag"] = bool(k % 4 == 1)
    return g


@pytest.mark.parametrize("suffix", [".json", ".npz", ".graphml"])
def test_every_node_attribute_round_trips_and_load_picks_the_format(chain_field, suffix, tmp_path):
    g = _with_string_attribute(
        DensityGraph.from_field(chain_field, adjacency_threshold=4.5, min_num_nodes=1)
    )
    path = tmp_path / f"g{suffix}"
    {".json": g.save, ".npz": g.save_as_npz, ".graphml": g.save_as_graphml}[suffix](path)
    back = DensityGraph.load(path)
    for node in g.node_ids:
        assert back.graph.nodes[node] == g.graph.nodes[node]
    assert isinstance(back.graph.nodes[0]["sse"], str) and back.graph.nodes[1]["sse"] == "strand"
    assert "flag" not in back.graph.nodes[0] and back.graph.nodes[1]["flag"] is True
    if suffix != ".graphml":  # GraphML keeps list attributes as JSON text
        assert nx.utils.graphs_equal(back.graph, g.graph)
    else:
        assert json.loads(back.graph.graph["voxel_size"]) == g.graph.graph["voxel_size"]


def test_npz_refuses_mixed_attribute_types_and_reads_older_files(chain_field, tmp_path):
    g = DensityGraph.from_field(chain_field, adjacency_threshold=4.5, min_num_nodes=1)
    g.graph.nodes[0]["sse"], g.graph.nodes[1]["sse"] = "helix", 2.0
    with pytest.raises(InputError, match="'sse' mixes types"):
        g.save_as_npz(tmp_path / "mixed.npz")
    del g.graph.nodes[0]["sse"], g.graph.nodes[1]["sse"]
    arrays = load_npz(g.save_as_npz(tmp_path / "g.npz"))
    old = {k: v for k, v in arrays.items() if not k.startswith("node_attr")}
    old["graph_attrs"] = np.array(json.dumps(old["graph_attrs"]))
    with open(tmp_path / "old.npz", "wb") as handle:  # a file written before node attributes
        np.savez(handle, **old)
    assert nx.utils.graphs_equal(DensityGraph.load(tmp_path / "old.npz").graph, g.graph)
    assert load_graphml(g.save_as_graphml(tmp_path / "g.graphml")).number_of_nodes() == len(g)
