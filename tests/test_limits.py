"""Memory and size bounds, determinism, and defined behaviour for bad query points.

* Queries run in bounded chunks: ``get_values`` on 10^7 points allocates little beyond its
  output (tracemalloc), and grid sampling keeps only what passes the threshold.
* Inputs whose size would exceed the limit are refused before allocation, with a message
  naming ``--max-voxels`` / ``NEURAL_EM_MAX_VOXELS``, for maps and for sampling grids
  (resample at a tiny voxel size, a graph's seed grid); the option really raises the limit.
* Determinism: saving a field twice gives identical bytes; two graphs of one field are
  identical files.
* Query points that are NaN, infinite, wrongly shaped or empty have defined results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import gaussian_blobs

from neural_em.cli.main import main
from neural_em.errors import InputError, SizeLimitError
from neural_em.fields import SplineDensityMap, load_field
from neural_em.voxelmap import read_map, write_map

REPO = Path(__file__).resolve().parents[1]
HAS_GRAPH = importlib.util.find_spec("neural_em.graph.density_graph") is not None
HAS_GRAPH_CLI = importlib.util.find_spec("neural_em.cli.graph") is not None
HAS_NEURAL = importlib.util.find_spec("neural_em.fields.neural") is not None


@pytest.fixture(scope="module")
def field() -> SplineDensityMap:
    centres = np.random.default_rng(0).uniform(3, 27, size=(12, 3))
    vmap = gaussian_blobs(centres, shape_xyz=(30, 28, 26), voxel_size=1.0)
    return SplineDensityMap(vmap.normalised())


def run_cli(capsys, argv):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- chunked queries
@pytest.mark.slow
def test_get_values_on_1e7_points_is_chunked(field):
    """Peak traced memory beyond the input and the (n, 4) float32 output stays small."""
    rng = np.random.default_rng(1)
    lo, hi = field.bounds
    n = 10_000_000
    points = lo + (hi - lo + 4.0) * rng.random((n, 3)) - 2.0  # some outside the box
    output_bytes = n * 4 * 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        values = field.get_values(points)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    extra_mb = (peak - output_bytes) / 2**20
    chunk_mb = field.chunk_points * 64 * 8 * 3 / 2**20  # the spline's per-chunk stencils
    assert extra_mb < chunk_mb + 32, f"get_values used {extra_mb:.0f} MB beyond its output"
    inside = field.contains(points[:100_000])
    assert np.all(np.isfinite(values[:100_000][inside]))
    assert np.all(np.isnan(values[:100_000][~inside]))


def test_sample_points_keeps_memory_to_the_seeds(field):
    """A fine grid (about 4 million points) sampled with a high threshold: memory bounded by
    the slabs, not the grid."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        pts, vals = field.sample_points(0.18, density_threshold=0.9)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    n_grid = np.prod([len(a) for a in field.grid_axes(0.18)])
    assert n_grid > 3_000_000
    assert len(pts) < n_grid / 50
    grid_mb = n_grid * 3 * 8 / 2**20
    assert peak / 2**20 < 0.35 * grid_mb + 64, f"peak {peak / 2**20:.0f} MB for {n_grid} points"
    assert np.all(vals[:, 0] >= 0.9)


# ---------------------------------------------------------------------------- size limits
def test_map_size_limit_names_the_option(tmp_path, capsys, monkeypatch):
    vmap = gaussian_blobs([[5.0, 5.0, 5.0]], shape_xyz=(12, 11, 10))
    path = tmp_path / "m.mrc"
    write_map(path, vmap)
    with pytest.raises(SizeLimitError, match="--max-voxels") as info:
        read_map(path, max_voxels=1000)
    assert "NEURAL_EM_MAX_VOXELS" in str(info.value) and str(path) in str(info.value)
    read_map(path, max_voxels=1320)
    for argv in (
        ["info", str(path), "--max-voxels", "1000"],
        [
            "fit",
            str(path),
            "--field",
            "spline",
            "-o",
            str(tmp_path / "x.neural"),
            "--max-voxels",
            "1000",
        ],
    ):
        code, _, err = run_cli(capsys, argv)
        assert code == 2 and "--max-voxels" in err and err.count("\n") == 1, err
    monkeypatch.setenv("NEURAL_EM_MAX_VOXELS", "1000")
    code, _, err = run_cli(capsys, ["info", str(path)])
    assert code == 2 and "limit of 1000" in err
    code, _, err = run_cli(capsys, ["info", str(path), "--max-voxels", "2000"])
    assert code == 0, err  # the option overrides the environment
    monkeypatch.setenv("NEURAL_EM_MAX_VOXELS", "lots")
    code, _, err = run_cli(capsys, ["info", str(path)])
    assert code == 2 and "NEURAL_EM_MAX_VOXELS" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-5", "many", "1.5"])
def test_bad_max_voxels_values(value, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["info", str(tmp_path / "x.mrc"), "--max-voxels", value])
    assert code == 2 and "--max-voxels" in err and "Traceback" not in err


def test_grid_limit_checked_before_allocation(field, monkeypatch):
    """A tiny step asks for ~10^30 points: refused at once (no overflow, no allocation)."""
    for step in (1e-9, 1e-300, 5e-324):
        with pytest.raises(SizeLimitError, match="--max-voxels"):
            field.grid_axes(step)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "x", None):
        with pytest.raises(InputError):
            field.grid_axes(bad)
    field.max_voxels = 10_000
    try:
        with pytest.raises(SizeLimitError, match="limit of 10000"):
            field.sample_densities(0.5)
        assert field.sample_densities(2.0).shape == (13, 14, 15)
    finally:
        field.max_voxels = None


def test_resample_limit_and_option(field, tmp_path, capsys, monkeypatch):
    path = tmp_path / "f.neural"
    field.save(path)
    out = tmp_path / "r.mrc"
    code, _, err = run_cli(capsys, ["resample", str(path), "-o", str(out), "--voxel-size", "1e-6"])
    assert code == 2 and "--max-voxels" in err and not out.exists(), err
    monkeypatch.setenv("NEURAL_EM_MAX_VOXELS", "5000")
    code, _, err = run_cli(capsys, ["resample", str(path), "-o", str(out), "--voxel-size", "1"])
    assert code == 2 and "limit of 5000" in err and not out.exists()
    code, _, err = run_cli(
        capsys,
        ["resample", str(path), "-o", str(out), "--voxel-size", "1", "--max-voxels", "30000"],
    )
    assert code == 0 and out.exists(), err
    code, _, err = run_cli(
        capsys, ["resample", str(path), "-o", str(tmp_path / "q.mrc"), "--voxel-size", "1", "2"]
    )
    assert code == 2 and "one or three" in err and "internal error" not in err


@pytest.mark.skipif(not HAS_GRAPH_CLI, reason="neural-em graph not present yet")
def test_graph_seed_grid_limit_names_the_option(tmp_path, capsys, monkeypatch):
    centres = np.random.default_rng(3).uniform(3, 17, size=(6, 3))
    vmap = gaussian_blobs(centres, shape_xyz=(20, 20, 20), voxel_size=1.0)
    path = tmp_path / "g.mrc"
    write_map(path, vmap)
    monkeypatch.setenv("NEURAL_EM_MAX_VOXELS", "10000")  # the map fits, its seed grid not
    code, _, err = run_cli(capsys, ["graph", str(path), "-o", str(tmp_path / "g.graph.json")])
    assert code == 2 and "--max-voxels" in err and "Traceback" not in err, err


@pytest.mark.skipif(not HAS_GRAPH_CLI, reason="neural-em graph not present yet")
def test_graph_max_voxels_option_raises_the_seed_grid_limit(tmp_path, capsys, monkeypatch):
    centres = np.random.default_rng(3).uniform(3, 17, size=(6, 3))
    vmap = gaussian_blobs(centres, shape_xyz=(20, 20, 20), voxel_size=1.0)
    path = tmp_path / "g.mrc"
    write_map(path, vmap)
    monkeypatch.setenv("NEURAL_EM_MAX_VOXELS", "10000")
    code, _, err = run_cli(
        capsys,
        [
            "graph",
            str(path),
            "-o",
            str(tmp_path / "g.graph.json"),
            "--max-voxels",
            "100000",
            "--min-nodes",
            "1",
        ],
    )
    assert code == 0, err


# ---------------------------------------------------------------------------- determinism
def test_spline_files_are_identical(field, tmp_path):
    field.save(tmp_path / "a.neural")
    field.save(tmp_path / "b.neural")
    assert (tmp_path / "a.neural").read_bytes() == (tmp_path / "b.neural").read_bytes()
    again = load_field(tmp_path / "a.neural")
    again.save(tmp_path / "c.neural")
    assert (tmp_path / "c.neural").read_bytes() == (tmp_path / "a.neural").read_bytes()


@pytest.mark.skipif(not HAS_GRAPH, reason="graph module not present yet")
def test_two_spline_graphs_are_identical(field, tmp_path):
    from neural_em.graph.density_graph import DensityGraph

    files = []
    for name, threads in (("a", 1), ("b", 2), ("c", None)):
        graph = DensityGraph.from_field(field, min_num_nodes=1, threads=threads)
        assert len(graph) > 0
        graph.save(tmp_path / f"{name}.graph.json")
        files.append(json.loads((tmp_path / f"{name}.graph.json").read_text()))
    for other in files[1:]:
        assert other["nodes"] == files[0]["nodes"]
        assert other["edges"] == files[0]["edges"]


@pytest.mark.skipif(not HAS_GRAPH_CLI, reason="neural-em graph not present yet")
def test_graph_cli_twice_gives_identical_files(field, tmp_path, capsys):
    path = tmp_path / "f.neural"
    field.save(path)
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.graph.json"
        code, _, err = run_cli(
            capsys,
            [
                "graph",
                str(path),
                "-o",
                str(out),
                "--min-nodes",
                "1",
                "--npz",
                str(tmp_path / f"{name}.npz"),
            ],
        )
        assert code == 0, err
        outs.append(out)

    def strip_times(obj):
        obj["graph"] = {k: v for k, v in obj["graph"].items() if "time" not in k}
        return obj

    a, b = (strip_times(json.loads(p.read_text())) for p in outs)
    assert a == b
    with np.load(tmp_path / "a.npz") as za, np.load(tmp_path / "b.npz") as zb:
        for key in za.files:
            if key != "graph_attrs":
                assert np.array_equal(za[key], zb[key]), key


# ---------------------------------------------------------------------------- bad points
def test_bad_query_points_have_defined_results(field):
    lo, hi = field.bounds
    centre = (lo + hi) / 2
    assert field.get_values([]).shape == (0, 4)
    assert field.get_values(np.zeros((0, 3))).shape == (0, 4)
    one = field.get_values(centre)
    assert one.shape == (1, 4) and np.all(np.isfinite(one))
    ints = field.get_values(np.rint(centre).astype(int)[None])
    assert np.all(np.isfinite(ints))
    pts = np.array(
        [centre, [np.nan, 1, 1], [np.inf, 0, 0], [-np.inf, 0, 0], hi + 1, lo - 1, hi, lo]
    )
    vals = field.get_values(pts)
    assert np.all(np.isfinite(vals[0])) and np.all(np.isfinite(vals[6:]))
    assert np.all(np.isnan(vals[1:6]))
    assert field.contains(pts).tolist() == [True, False, False, False, False, False, True, True]
    assert np.array_equal(field.get_densities(pts), vals[:, 0], equal_nan=True)
    assert field.get_gradients(pts).shape == (8, 3)
    for bad in (
        np.zeros((4, 2)),
        np.zeros((2, 3, 3)),
        np.zeros(4),
        [[1, 2, 3], [1, 2]],
        "abc",
        [["a", "b", "c"]],
        {"x": 1},
    ):
        with pytest.raises(InputError):
            field.get_values(bad)


def test_query_cli_bad_points(field, tmp_path, capsys):
    path = tmp_path / "f.neural"
    field.save(path)
    lo, hi = field.bounds
    c = (lo + hi) / 2
    cases = {
        "good": (f"x,y,z\n{c[0]},{c[1]},{c[2]}\nnan,1,1\ninf,0,0\n", 0),
        "empty": ("", 0),
        "header_only": ("x,y,z\n", 0),
        "two_columns": ("1,2\n", 2),
        "words": ("a,b,c\n", 2),
        "words_later": ("1,2,3\nx,y,z\n", 2),
        "binary": ("\x00\x01\x02,\x03\n", 2),
    }
    for name, (text, expected) in cases.items():
        points = tmp_path / f"{name}.csv"
        points.write_text(text)
        out = tmp_path / f"{name}.out.csv"
        code, _, err = run_cli(capsys, ["query", str(path), str(points), "-o", str(out)])
        assert code == expected, f"{name}: {err}"
        if expected == 2:
            assert str(points) in err and err.count("\n") == 1 and not out.exists()
        else:
            rows = out.read_text().splitlines()
            assert rows[0] == "x,y,z,density,grad_x,grad_y,grad_z"
            if name == "good":
                assert "nan" not in rows[1].lower()
                for row in rows[2:4]:
                    assert all(v.lower() == "nan" for v in row.split(",")[3:]), row
    code, _, err = run_cli(
        capsys,
        ["query", str(path), str(tmp_path / "missing.csv"), "-o", str(tmp_path / "m.out.csv")],
    )
    assert code == 2 and "missing.csv" in err


@pytest.mark.skipif(not HAS_GRAPH, reason="graph module not present yet")
def test_graph_of_a_field_with_no_seeds_is_empty_not_nan(field):
    """A seed threshold above every density: an empty graph, not an error or NaNs."""
    from neural_em.graph.density_graph import DensityGraph

    graph = DensityGraph.from_field(field, seed_threshold=2.0, min_num_nodes=1)
    assert len(graph) == 0 and graph.graph.number_of_edges() == 0


def test_environment_limit_used_by_library(tmp_path, monkeypatch):
    vmap = gaussian_blobs([[5.0, 5.0, 5.0]], shape_xyz=(12, 11, 10))
    path = tmp_path / "m.mrc"
    write_map(path, vmap)
    monkeypatch.setenv("NEURAL_EM_MAX_VOXELS", "100")
    with pytest.raises(SizeLimitError, match="NEURAL_EM_MAX_VOXELS"):
        SplineDensityMap.from_voxel_map(path)
    monkeypatch.delenv("NEURAL_EM_MAX_VOXELS")
    assert SplineDensityMap.from_voxel_map(path).shape_xyz == (12, 11, 10)
    assert os.environ.get("NEURAL_EM_MAX_VOXELS") is None
