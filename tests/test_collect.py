"""neural_em.pipeline.collect and .figures on synthetic per-entry files (no Snakemake run)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_REFERENCE, gaussian_blobs, reference_file

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields.fileformat import write_field_file
from neural_em.fields.records import RECORD_VERSION, RegionRecord, training_summary
from neural_em.fields.spline import SplineDensityMap
from neural_em.pipeline import collect, figures, summary, tables
from neural_em.voxelmap import VoxelMap, write_map


def _metrics_json(recall, precision, rmsd, nodes, ca, atoms=False):
    """A metrics record as ``neural-em evaluate -o`` writes it (every name of GRAPH_METRICS)."""
    out = {
        "recall": recall,
        "coverage": min(1.0, recall + 0.02),
        "precision": precision,
        "one_to_one_precision": None,
        "f1": None,
        "rmsd": rmsd,
        "nodes": nodes,
        "ca": ca,
        "nodes_per_ca": nodes / ca,
        "edges": nodes,
        "chain_recall": None,
        "edge_precision": None,
        "mean_degree": 2.0,
        "recall_helix": recall,
        "recall_strand": None,
        "recall_coil": recall,
        **{
            f"label_{kind}_{label}": None
            for label in ("helix", "strand", "coil")
            for kind in ("precision", "recall")
        },
        "baseline": {
            "recall": 0.5,
            "coverage": 0.6,
            "precision": 0.3,
            "rmsd": 1.0,
            "nodes": 2 * nodes,
            "nodes_per_ca": 2 * nodes / ca,
        },
    }
    if atoms:
        out["atoms"] = {
            "recall": 0.8,
            "coverage": 0.85,
            "precision": 0.9,
            "rmsd": 0.2,
            "reference": 1000,
            "nodes": nodes,
        }
    return out


def _interp_json(methods):
    out = {
        "device": "cpu",
        "wall_s": 12.5,
        "control": {"n_nonzero": 1234},
        "coarse": {"shape_xyz": [10, 10, 10]},
        "methods": {},
        "skipped": {},
    }
    for i, m in enumerate(methods):
        stats = {
            "n": 1234,
            "min": -0.1 * (i + 1),
            "max": 0.2 * (i + 1),
            "mean": 0.001,
            "mean_abs": 0.01 * (i + 1),
            "rmse": 0.02 * (i + 1),
            "max_abs": 0.2 * (i + 1),
        }
        out["methods"][m] = {
            "build_s": 1.5 + i,
            "evaluate_s": 0.5,
            "common": {"nonzero": stats, "all": stats},
            "separate": {"nonzero": {**stats, "mean_abs": 99.0}},
        }
    return out


def neural_header(key: str) -> dict:
    """A ``.neural`` header as the library writes it: two regions, one trained, one empty."""
    records = [
        RegionRecord(
            loss=2e-5, max_error=0.02, epochs=40, best_epoch=38, seconds=3.0, stop="converged"
        ),
        RegionRecord.empty(),
    ]
    return {
        "kind": "neural",
        "map_id": key,
        "shape_xyz": [8, 10, 12],
        "voxel_size": [1.0, 1.0, 1.0],
        "origin": [0.0, 0.0, 0.0],
        "preset": "fast",
        "regions": [{"lo": [0, 0, 0], "hi": [8, 10, 12]}, {"lo": [4, 6, 8], "hi": [8, 10, 12]}],
        "training": training_summary(records, seconds=3.0, seed=0),
        "devices": ["cpu"],
    }


def make_entry(
    tmp: Path,
    key: str = "emd_0001",
    resolution: float = 3.2,
    *,
    neural: bool = True,
    atoms: bool = False,
    methods=("trilinear", "spline", "fourier", "neural"),
):
    """Every file the collect rule reads for one entry, as the library would write them."""
    d = tmp / key
    d.mkdir(parents=True)
    vmap = gaussian_blobs([[8.0, 9.0, 10.0], [14.0, 12.0, 9.0]], shape_xyz=(20, 18, 16))
    write_map(d / "map.mrc", vmap)
    with open(d / "map.mrc", "rb") as src, gzip.open(d / f"{key}.map.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    files = {
        "entry_info": d / "info.json",
        "map": d / f"{key}.map.gz",
        "fasta": d / "seq.fasta",
        "spline": d / "spline.neural",
        "spline_bench": d / "spline.tsv",
        "neural_mrc": d / "neural.mrc",
    }
    files["entry_info"].write_text(
        json.dumps(
            {
                "key": key,
                "emdb_id": "EMD-" + key[4:],
                "pdb_id": "1abc",
                "resolution": resolution,
                "contour": 0.1,
                "title": "test",
                "shape_xyz": [20, 18, 16],
                "voxel_size": [1, 1, 1],
            }
        )
    )
    files["fasta"].write_text(">a\nACDE\n>b\nFGH\n")
    SplineDensityMap(vmap.normalised()).save(files["spline"])
    bench = "s\th:m:s\tmax_rss\tmax_vms\n{}\t0:00:01\t120.5\t300\n"
    files["spline_bench"].write_text(bench.format(0.75))
    crop = VoxelMap(data=np.zeros((12, 10, 8), np.float32), voxel_size=1.0, origin=0.0)
    write_map(files["neural_mrc"], crop)
    if neural:
        files["neural"] = d / "field.neural"
        write_field_file(files["neural"], neural_header(key), {"w": np.ones((10, 10), np.float32)})
        files["neural_record"] = d / "fit.json"
        files["neural_record"].write_text(json.dumps({"device": "cpu", "seconds": 4.25}))
        files["neural_bench"] = d / "neural.tsv"
        files["neural_bench"].write_text(bench.format(5.0))
    for field, (rec, prec) in {"neural": (0.9, 0.7), "spline": (0.95, 0.72)}.items():
        files[f"graph_{field}"] = d / f"{field}.graph.json"
        files[f"graph_{field}"].write_text(
            json.dumps(
                {
                    "graph": {"timings": {"total": 1.25 if field == "spline" else 9.5}},
                    "nodes": [],
                    "edges": [],
                }
            )
        )
        files[f"graph_{field}_metrics"] = d / f"{field}.metrics.json"
        files[f"graph_{field}_metrics"].write_text(
            json.dumps(_metrics_json(rec, prec, 1.1, 700, 574, atoms=atoms))
        )
        files[f"graph_{field}_bench"] = d / f"{field}.graph.tsv"
        files[f"graph_{field}_bench"].write_text(bench.format(11.0))
    files["interpolation"] = d / "interp.json"
    files["interpolation"].write_text(json.dumps(_interp_json(methods)))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture()
def metrics(tmp_path):
    manifest = {
        "emd_0001": make_entry(tmp_path, "emd_0001", 3.2),
        "emd_0002": make_entry(
            tmp_path, "emd_0002", 1.8, atoms=True, methods=("trilinear", "spline")
        ),
    }
    return collect.collect_metrics(
        manifest,
        graph_fields=["neural", "spline"],
        interpolation_methods=["trilinear", "fourier", "spline", "neural"],
        deeptracer=False,
        settings={"x": 1},
    )


def test_entry_record(metrics):
    e = metrics["entries"]["emd_0001"]
    assert e["resolution"] == 3.2 and e["pdb_id"] == "1abc"
    assert e["map"]["voxels"] == 20 * 18 * 16
    assert e["map"]["mrc_bytes"] == 1024 + 4 * 20 * 18 * 16
    assert e["sequences"] == {"sequences": 2, "residues": 7}
    n = e["neural"]
    assert n["regions"] == 2 and n["regions_trained"] == 1
    assert n["total_training_s"] == pytest.approx(3.0)
    assert n["mean_loss"] == pytest.approx(2e-5)
    assert n["device"] == "cpu" and n["fit_wall_s"] == pytest.approx(4.25)
    assert n["crop_voxels"] == 960
    assert n["size_ratio_crop_mrc"] == pytest.approx(n["bytes"] / n["crop_mrc_bytes"])
    # graph times come from the graph's own timings, not the job's wall time
    assert e["graph"]["spline"]["seconds"] == pytest.approx(1.25)
    assert e["graph"]["neural"]["job_s"] == pytest.approx(11.0)
    # the headline interpolation errors are the common-scale, non-zero-voxel ones
    assert e["interpolation"]["methods"]["spline"]["mae"] == pytest.approx(0.02)
    assert e["deeptracer"] == {"status": "not run"}
    assert metrics["summary"]["entries"] == 2


def test_region_records_are_read_strictly(metrics):
    regions = metrics["entries"]["emd_0001"]["neural"]["per_region"]
    assert regions == [
        {
            "region": 0,
            "voxels": 960.0,
            "epochs": 40.0,
            "loss": 2e-5,
            "max_error": 0.02,
            "seconds": 3.0,
            "stopped": "converged",
            "skipped": False,
            "device": "cpu",
        },
        {
            "region": 1,
            "voxels": 64.0,
            "epochs": 0.0,
            "loss": 0.0,
            "max_error": 0.0,
            "seconds": 0.0,
            "stopped": "empty",
            "skipped": True,
            "device": "cpu",
        },
    ]


@pytest.mark.parametrize(
    "change",
    ["renamed_key", "missing_key", "extra_key", "bad_stop", "other_version", "wrong_count"],
)
def test_collect_refuses_a_record_it_does_not_know(tmp_path, change):
    """A renamed key used to pass every test and turn into empty cells: now it stops."""
    files = make_entry(tmp_path, "emd_0001")
    header = neural_header("emd_0001")
    rec = header["training"]["regions"][0]
    if change == "renamed_key":
        rec["best_loss"] = rec.pop("loss")
    elif change == "missing_key":
        del rec["seconds"]
    elif change == "extra_key":
        rec["device"] = "cpu"
    elif change == "bad_stop":
        rec["stop"] = "stopped"
    elif change == "other_version":
        header["training"]["record_version"] = RECORD_VERSION + 1
    elif change == "wrong_count":
        header["training"]["regions"].pop()
    write_field_file(files["neural"], header, {"w": np.ones((10, 10), np.float32)}, overwrite=True)
    with pytest.raises(FieldFormatError) as info:
        collect.collect_metrics({"emd_0001": files}, graph_fields=["neural"])
    assert str(info.value).startswith(files["neural"] + ": ")
    assert "\n" not in str(info.value)


def test_graph_metrics_and_interpolation_are_read_strictly(tmp_path):
    """A record without one of the evaluation's names stops the collection with an error
    naming the file and the key (no synonyms, no silent None)."""
    from neural_em.graph.evaluate import GRAPH_METRICS

    assert collect.GRAPH_KEYS == GRAPH_METRICS
    files = make_entry(tmp_path)
    path = Path(files["graph_spline_metrics"])
    record = json.loads(path.read_text())
    record["atomic"] = record.pop("baseline")  # a synonym is not read
    path.write_text(json.dumps(record))
    e = collect.collect_entry("emd_0001", files, graph_fields=["spline"])
    assert "baseline" not in e["graph"]["spline"] and "atomic" not in e["graph"]["spline"]
    del record["chain_recall"]
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="lacks the key 'chain_recall'") as err:
        collect.collect_entry("emd_0001", files, graph_fields=["spline"])
    assert err.value.path == str(path)
    interp = Path(files["interpolation"])
    record = json.loads(interp.read_text())
    record["methods"]["spline"]["normalised"] = record["methods"]["spline"].pop("common")
    interp.write_text(json.dumps(record))
    with pytest.raises(InputError, match="lacks the key 'common'") as err:
        collect.collect_entry("emd_0001", files, interpolation_methods=["spline"])
    assert err.value.path == str(interp)


def test_method_not_run_is_a_string_not_a_number(metrics):
    e = metrics["entries"]["emd_0002"]
    assert e["interpolation"]["methods"]["neural"]["status"] == "not run"
    rows = tables.interpolation_rows(metrics)
    row = next(r for r in rows if r["EMDB ID"] == "emd_0002")
    assert row["Neural MAE"] == "not run" and row["Fourier MAE"] == "not run"
    assert row["Linear MAE"] == pytest.approx(0.01)


def test_tables_have_the_study_columns_first(metrics, tmp_path):
    paths = {
        name: tmp_path / f"{name}.csv"
        for name in ("graph", "atomic", "interpolation", "training", "timings")
    }
    tables.write_tables(metrics, paths)
    with open(paths["graph"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert header[:10] == tables.PAPER_GRAPH_COLUMNS
    row = next(r for r in rows if r["EMDB ID"] == "emd_0001")
    assert float(row["% C-a with Node"]) == pytest.approx(90.0)
    assert float(row["Spline % Node with C-a"]) == pytest.approx(72.0)
    assert row["DeepTracer % matching"] == "not run" and row["DeepTracer RMSD"] == "not run"
    assert row["Fit device"] == "cpu"
    with open(paths["atomic"], newline="") as handle:
        atomic = list(csv.DictReader(handle))
    assert {r["EMDB ID"] for r in atomic} == {"emd_0002"}  # only maps better than 2 Å
    assert float(atomic[0]["% Atom with node"]) == pytest.approx(80.0)
    with open(paths["training"], newline="") as handle:
        training = list(csv.DictReader(handle))
    assert len(training) == 4 and any("skipped" in r["Stopped by"] for r in training)
    with open(paths["interpolation"], newline="") as handle:
        interp_header = next(csv.reader(handle))
    assert interp_header[1:9] == tables.PAPER_INTERP_COLUMNS


def test_columns_match_the_published_tables():
    for name, ours in (
        ("paper_graph_residue_comparison.csv", tables.PAPER_GRAPH_COLUMNS),
        ("paper_graph_atomic_comparison.csv", tables.PAPER_ATOMIC_COLUMNS),
        ("paper_interpolation_evaluation.csv", tables.PAPER_INTERP_COLUMNS),
    ):
        with open(reference_file(name), newline="") as handle:
            assert next(csv.reader(handle)) == ours, name


def test_metrics_json_has_no_nan(metrics, tmp_path):
    path = collect.write_metrics(metrics, tmp_path / "metrics.json")
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["entries"]["emd_0001"]["deeptracer"]["status"] == "not run"


def _png_is_drawn(path: Path) -> float:
    """Fraction of pixels that are not (near) white."""
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    rgb = img[..., :3]
    return float(np.mean(np.any(rgb < 0.9, axis=-1)))


@pytest.mark.parametrize("with_reference", [False, True])
def test_figures_are_drawn(metrics, tmp_path, with_reference):
    ref = SHARED_REFERENCE if with_reference else None
    if with_reference and not (SHARED_REFERENCE / "paper_graph_evaluation.json").is_file():
        pytest.skip(f"{SHARED_REFERENCE} is absent")
    paths = figures.make_figures(metrics, tmp_path / "fig", reference_dir=ref)
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.{e}" for n in figures.FIGURES for e in ("png", "svg")
    )
    for p in paths:
        if p.suffix == ".png":
            ink = _png_is_drawn(p)
            assert 0.01 < ink < 0.6, (p, ink)
        else:
            assert "<svg" in p.read_text()[:2000]
    if with_reference:  # the study's 115 maps are drawn: more ink than ours alone
        ours = figures.make_figures(metrics, tmp_path / "alone", names=["graph_metrics"])
        assert _png_is_drawn(tmp_path / "fig" / "graph_metrics.png") > _png_is_drawn(ours[0])


def test_figures_with_no_entries(tmp_path):
    paths = figures.make_figures({"entries": {}}, tmp_path)
    assert len(paths) == 2 * len(figures.FIGURES) == 10


def test_summary_html(metrics, tmp_path):
    pngs = [p for p in figures.make_figures(metrics, tmp_path / "f") if p.suffix == ".png"]
    csvs = {"graph": tmp_path / "g.csv"}
    tables.write_tables(metrics, {"graph": csvs["graph"]})
    out = summary.write_summary_html(metrics, pngs, csvs, tmp_path / "s.html")
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 5
    assert "% C-a with Node" in text and "not run" in text


def test_map_shape_comes_from_the_one_header_reader(tmp_path):
    files = make_entry(tmp_path, "emd_0001")
    assert collect.map_shape_from_gz(files["map"]) == [20, 18, 16]
    plain_named_gz = tmp_path / "plain.map.gz"  # compression from the bytes, not the name
    plain_named_gz.write_bytes(gzip.decompress(Path(files["map"]).read_bytes()))
    assert collect.map_shape_from_gz(plain_named_gz) == [20, 18, 16]
    (tmp_path / "junk.map.gz").write_bytes(b"<html>404</html>")
    assert collect.map_shape_from_gz(tmp_path / "junk.map.gz") is None
