"""Local entries (a user's own map and model instead of an EMDB id), the configuration's
defaults, the parse-time checks, and a clone of the repository that stands alone.

The pipeline runs use small crops of the demo map (EMD-3488) written by the tests themselves:
one with an axis order other than x, y, z, masked, with the model of one chain (as PDB), and
one without a model. Every run uses ``--directory`` into a temporary folder.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pytest
import yaml
from test_workflow import REPO, SNAKEFILE, job_blocks, job_counts, merged, snakemake, write_config

from neural_em.mrcread import read_map_header
from neural_em.pipeline.entries import EntryError, config_entries
from neural_em.voxelmap import read_map

MIRROR = REPO / "data" / "demo" / "mirror"
DEMO_MAP = MIRROR / "ftp.ebi.ac.uk/pub/databases/emdb/structures/EMD-3488/map/emd_3488.map.gz"
DEMO_MODEL = MIRROR / "files.rcsb.org/download/5ni1.cif.gz"
#: Axis order of the permuted test map: columns z, rows x, sections y.
AXES = (3, 1, 2)


# ====================================================================== small local files
def write_permuted_mrc(
    path: Path, data_zyx: np.ndarray, voxel_size: float, origin_xyz, axes=AXES
) -> Path:
    """An MRC file whose columns, rows and sections are the map axes ``axes`` (1 = x)."""
    # file order: data[section, row, column]; our array is [z, y, x] (axis 3, 2, 1)
    held = (3, 2, 1)
    file_axes = (axes[2], axes[1], axes[0])  # map axis of array axis 0, 1, 2 in the file
    data = np.ascontiguousarray(
        np.transpose(data_zyx, [held.index(a) for a in file_axes]), dtype=np.float32
    )
    shape_xyz = data_zyx.shape[::-1]
    with mrcfile.new(
        path, overwrite=True, compression="gzip" if path.suffix == ".gz" else None
    ) as mrc:
        mrc.set_data(data)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = axes
        mrc.header.mx, mrc.header.my, mrc.header.mz = shape_xyz
        mrc.header.cella = tuple(float(n * voxel_size) for n in shape_xyz)
        mrc.header.origin = tuple(float(v) for v in origin_xyz)
        mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
        mrc.update_header_stats()
    return path


def chain_box(chain: str, margin_A: float = 4.0):
    """Voxel index box (x, y, z; end exclusive) of the demo map around one chain."""
    vmap = read_map(DEMO_MAP)
    st = gemmi.read_structure(str(DEMO_MODEL))
    ca = np.array([a.pos.tolist() for res in st[0][chain] for a in res if a.name == "CA"])
    lo = np.floor((ca.min(0) - margin_A - vmap.origin) / vmap.voxel_size).astype(int)
    hi = np.ceil((ca.max(0) + margin_A - vmap.origin) / vmap.voxel_size).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, vmap.shape_xyz)
    return vmap, lo, hi


def make_local_files(folder: Path) -> dict[str, Path]:
    """maps/chain_a.mrc (axis order z, x, y; masked to a ball; model chain A as PDB) and
    maps/chain_b.mrc.gz (axis order x, y, z, no model)."""
    maps = folder / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    out = {}
    for chain, name in (("A", "chain_a.mrc"), ("B", "chain_b.mrc.gz")):
        vmap, lo, hi = chain_box(chain)
        crop = vmap.subbox(lo, hi)
        data = crop.data.copy()
        if chain == "A":  # masked: zero outside an ellipsoid inscribed in the box
            nz, ny, nx = data.shape
            z, y, x = np.mgrid[:nz, :ny, :nx]
            inside = (
                ((x - (nx - 1) / 2) / (nx / 2)) ** 2
                + ((y - (ny - 1) / 2) / (ny / 2)) ** 2
                + ((z - (nz - 1) / 2) / (nz / 2)) ** 2
            ) <= 1.0
            data[~inside] = 0.0
            out["map_a"] = write_permuted_mrc(
                maps / name, data, float(crop.voxel_size[0]), crop.origin
            )
        else:
            out["map_b"] = write_permuted_mrc(
                maps / name, data, float(crop.voxel_size[0]), crop.origin, axes=(1, 2, 3)
            )
    st = gemmi.read_structure(str(DEMO_MODEL))
    st.setup_entities()
    for name in [ch.name for ch in st[0] if ch.name != "A"]:
        st[0].remove_chain(name)
    st.remove_ligands_and_waters()
    out["model_a"] = maps / "chain_a.pdb"
    st.write_pdb(str(out["model_a"]))
    return out


@pytest.fixture(scope="module")
def local_files(tmp_path_factory):
    return make_local_files(tmp_path_factory.mktemp("local"))


def test_permuted_masked_map_reads_back_as_the_crop(local_files):
    header = read_map_header(local_files["map_a"])
    assert header.axes == AXES
    vmap, lo, hi = chain_box("A")
    crop = vmap.subbox(lo, hi)
    back = read_map(local_files["map_a"])
    assert back.shape_xyz == crop.shape_xyz == header.shape_xyz
    assert back.axis_order == AXES
    np.testing.assert_allclose(back.origin, crop.origin, atol=1e-4)
    np.testing.assert_allclose(back.voxel_size, crop.voxel_size, rtol=1e-6)
    nonzero = back.data != 0
    assert 0.3 < nonzero.mean() < 0.7  # masked: a large part of the box is exactly zero
    np.testing.assert_array_equal(back.data[nonzero], crop.data[nonzero])


# ====================================================================== entries (library)
def local_entry(files, **changes):
    entry = {
        "name": "chain-a",
        "map": str(files["map_a"]),
        "model": str(files["model_a"]),
        "resolution": 3.2,
        "contour": 0.1,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


EMDB = {"emdb_id": "EMD-3488", "pdb_id": "5ni1", "resolution": 3.2}


def test_config_entries_mixes_emdb_and_local(local_files, tmp_path):
    rel = os.path.relpath(local_files["map_b"], tmp_path)
    entries = config_entries(
        [EMDB, local_entry(local_files), {"name": "chain_b", "map": rel, "resolution": 3.2}],
        base_dir=tmp_path,
    )
    assert sorted(entries) == ["chain-a", "chain_b", "emd_3488"]
    assert entries["emd_3488"]["source"] == "emdb" and entries["emd_3488"]["pdb_id"] == "5ni1"
    a, b = entries["chain-a"], entries["chain_b"]
    assert a["source"] == b["source"] == "local"
    assert a["model"] == str(local_files["model_a"].resolve()) and b["model"] is None
    assert b["map"] == str(local_files["map_b"].resolve())  # relative to base_dir
    assert a["axis_order"] == list(AXES) and b["contour"] is None


def _bad_cases(files, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a map\n" * 200)
    bad_model = tmp_path / "broken.cif"
    bad_model.write_text("data_x\n_atom_site.id 1\nloop_\n_garbage\n")
    return {
        "missing map": (
            [local_entry(files, map="maps/nothing.mrc")],
            r"'chain-a'.*map file maps/nothing.mrc does not exist",
        ),
        "unreadable map": (
            [local_entry(files, map=str(text))],
            r"'chain-a'.*map file is not a readable MRC/MAP/CCP4 map",
        ),
        "missing model": (
            [local_entry(files, model="nothing.cif")],
            r"'chain-a'.*model file nothing.cif does not exist",
        ),
        "unreadable model": (
            [local_entry(files, model=str(bad_model))],
            r"'chain-a'.*model file is not a readable PDB/mmCIF model",
        ),
        "both emdb_id and map": (
            [local_entry(files, emdb_id="EMD-3488")],
            r"'chain-a'.*both emdb_id and map",
        ),
        "duplicate names": (
            [local_entry(files), local_entry(files, model=None)],
            r"'chain-a'.*taken twice \(config entries\[0\] and entries\[1\]\)",
        ),
        "name of an EMDB entry": (
            [EMDB, local_entry(files, name="emd_3488")],
            r"'emd_3488'.*taken twice",
        ),
        "unsafe name": ([local_entry(files, name="my map/1")], r"'my map/1'.*not a safe file name"),
        "zero resolution": (
            [local_entry(files, resolution=0)],
            r"'chain-a'.*resolution must be a positive number",
        ),
        "negative resolution": (
            [local_entry(files, resolution=-3.2)],
            r"'chain-a'.*resolution must be a positive number",
        ),
        "no resolution": (
            [local_entry(files, resolution=None)],
            r"'chain-a'.*resolution must be a positive number",
        ),
    }


CASES = [
    "missing map",
    "unreadable map",
    "missing model",
    "unreadable model",
    "both emdb_id and map",
    "duplicate names",
    "name of an EMDB entry",
    "unsafe name",
    "zero resolution",
    "negative resolution",
    "no resolution",
]


@pytest.mark.parametrize("case", CASES)
def test_config_entries_refuses_naming_the_entry(local_files, tmp_path, case):
    items, message = _bad_cases(local_files, tmp_path)[case]
    with pytest.raises(EntryError, match=message):
        config_entries(items, base_dir=tmp_path)


@pytest.mark.parametrize("name", ["../up", "a.b", "ümlaut", "", "x y"])
def test_unsafe_names(local_files, tmp_path, name):
    with pytest.raises(EntryError, match="not a safe file name"):
        config_entries([local_entry(local_files, name=name)], base_dir=tmp_path)


def test_entry_without_emdb_id_or_map(tmp_path):
    with pytest.raises(EntryError, match=r"entries\[0\] \('x'\): needs emdb_id .* or map"):
        config_entries([{"name": "x", "resolution": 3.0}], base_dir=tmp_path)


# ====================================================================== configuration
def _validate(config):
    from snakemake.utils import validate

    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


@pytest.mark.parametrize("download", [{"offline": True}, None])
def test_download_block_is_optional_with_defaults_in_the_schema(download):
    config = merged()
    config.pop("download")
    if download is not None:
        config["download"] = dict(download)
    _validate(config)
    dl = config["download"]
    assert dl["emdb_base"].endswith("/pub/databases/emdb") and dl["emdb_api"].endswith("/api")
    assert dl["pdb_base"].endswith("/download") and dl["fasta_base"].endswith("/fasta")
    assert dl["offline"] is (download is not None) and dl["mirror"] is None
    assert dl["retries"] == 3 and dl["timeout_s"] == 60


def test_local_config_is_valid_and_names_existing_files():
    config = _validate(merged("local.yaml"))
    entries = config_entries(config["entries"], base_dir=REPO)
    assert list(entries) == ["haemoglobin-local"]
    assert entries["haemoglobin-local"]["model"].endswith("5ni1.cif.gz")


def test_reference_tables_are_in_the_repository():
    ref = REPO / "data" / "reference"
    assert merged()["reference_dir"] == "data/reference"
    assert merged("paper.yaml")["dataset"]["search_csv"] == "data/reference/emdb_search_highres.csv"
    study = json.loads((ref / "paper_graph_evaluation.json").read_text())
    assert len(study) == 115
    readme = (ref / "README.md").read_text()
    assert "Ranno" in readme and "BMC Bioinformatics" in readme and "2020-10-29" in readme
    for name in (
        "emdb_search_highres.csv",
        "paper_graph_residue_comparison.csv",
        "paper_graph_atomic_comparison.csv",
        "paper_interpolation_evaluation.csv",
    ):
        assert f"`{name}`" in readme, name


# ====================================================================== workflow: parse time
def _workflow_case(files, tmp_path, case):
    """The bad entry of ``case`` as a config file in ``tmp_path`` (paths from tmp_path)."""
    items, message = _bad_cases(files, tmp_path)[case]
    return write_config(
        tmp_path / "bad.yaml", {"dataset": {"source": "entries"}, "entries": items}
    ), message


@pytest.mark.parametrize("case", CASES)
def test_workflow_stops_before_any_job_naming_the_entry(local_files, tmp_path, case):
    cfg, message = _workflow_case(local_files, tmp_path, case)
    proc = snakemake(tmp_path, "--configfile", str(cfg), "--cores", "1", check=False, timeout=120)
    assert proc.returncode != 0
    assert re.search(message, proc.stdout.replace("\n", " ")), proc.stdout[-3000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_dry_run_mixes_emdb_and_local_entries(local_files, tmp_path):
    cfg = write_config(
        tmp_path / "mixed.yaml",
        {
            "dataset": {"source": "entries"},
            "entries": [
                dict(EMDB, contour=0.1),
                local_entry(local_files),
                {"name": "chain_b", "map": str(local_files["map_b"]), "resolution": 3.2},
            ],
        },
    )
    proc = snakemake(tmp_path, "--configfile", str(cfg), "-n", timeout=120)
    counts = job_counts(proc.stdout)
    for rule in ("download_metadata", "download_map", "download_model", "download_fasta"):
        assert counts[rule] == 1, (rule, counts)  # only the EMDB entry downloads
    assert counts["entry_info"] == counts["fit_neural"] == counts["fit_spline"] == 3
    assert counts["graph"] == 12  # 3 entries x 2 fields x 2 methods
    assert counts["evaluate_graph"] == 8 and counts["interpolation"] == 2  # chain_b: no model
    blocks = job_blocks(proc.stdout)
    fits = {
        re.search(r"wildcards: entry=([\w-]+)", b).group(1): b
        for r, b in blocks
        if r == "fit_neural"
    }
    assert sorted(fits) == ["chain-a", "chain_b", "emd_3488"]
    assert all(re.search(r"resources: .*\bgpu=1\b", b) for b in fits.values())
    assert str(local_files["map_a"]) in fits["chain-a"]
    assert "results/data/emd_3488/emd_3488.map.gz" in fits["emd_3488"]


# ====================================================================== a clone alone
def test_clone_without_shared_plans_the_paper_dataset(tmp_path):
    """The git-tracked files (and new ones not ignored) copied to a folder with no
    ../shared beside it plan the study's 119 maps, every fit tagged gpu=1."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    clone = tmp_path / "neural-em"
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    assert not (tmp_path / "shared").exists()
    assert (clone / "data" / "reference" / "emdb_search_highres.csv").is_file()
    assert not list(clone.rglob("*.mrc")) and not list(clone.rglob("*.map"))  # no maps copied
    env = {**os.environ, "PYTHONPATH": str(clone), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--configfile",
            "config/paper.yaml",
            "--cores",
            "8",
            "--resources",
            "gpu=7",
            "-n",
        ],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    counts = job_counts(proc.stdout)
    assert counts["fit_neural"] == 119, counts
    for rule in ("download_map", "entry_info", "fit_spline", "interpolation"):
        assert counts[rule] == 119, (rule, counts)
    assert counts["graph"] == counts["evaluate_graph"] == 476  # 2 fields x 2 methods
    fits = [b for r, b in job_blocks(proc.stdout) if r == "fit_neural"]
    assert len(fits) == 119 and all(re.search(r"resources: .*\bgpu=1\b", b) for b in fits)


# ====================================================================== the pipeline
_RUN: dict[str, Path] = {}

LOCAL_RUN = {
    # a few epochs more than config/smoke.yaml's 3: the neural graph of so short a fit of a
    # small crop has no node (measured: 0 nodes after 3 epochs, 332 after 15)
    "fit": {
        "max_epochs": 20,
        "time_budget_s": 15,
        "resources": {"mem_mb": 2000, "runtime": 10, "threads": 2},
    },
    # the experiment's methods are the same code for every entry: the quick ones suffice here
    "interpolation": {"methods": ["trilinear", "spline"], "max_eval_points": 50000},
    # offline without a mirror: any download would fail
    "download": {"offline": True, "mirror": None},
}


def local_workdir() -> Path:
    """Both local entries through the whole pipeline (once per session): chain-a with its
    model (axis order z, x, y; masked), chain_b without one (gzipped, no contour)."""
    if "dir" not in _RUN:
        workdir = Path(tempfile.mkdtemp(prefix="neural-em-local-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        make_local_files(workdir)
        config = dict(
            LOCAL_RUN,
            dataset={"source": "entries"},
            entries=[
                {
                    "name": "chain-a",
                    "map": "maps/chain_a.mrc",
                    "model": "maps/chain_a.pdb",
                    "resolution": 3.2,
                    "contour": 0.1,
                },
                {"name": "chain_b", "map": "maps/chain_b.mrc.gz", "resolution": 3.2},
            ],
        )
        cfg = write_config(workdir / "local.yaml", config)
        _RUN["stdout"] = snakemake(
            workdir, "--configfile", str(cfg), "--cores", "2", timeout=900
        ).stdout
        _RUN["dir"] = workdir
    return _RUN["dir"]


@pytest.mark.slow
def test_local_entries_run_end_to_end():
    workdir = local_workdir()
    counts = job_counts(_RUN["stdout"])
    assert not any(rule.startswith("download") for rule in counts), counts
    assert counts["fit_neural"] == counts["fit_spline"] == 2 and counts["graph"] == 8
    assert counts["evaluate_graph"] == 4 and counts["interpolation"] == 1
    results = workdir / "results"
    metrics = json.loads((results / "metrics.json").read_text())
    assert sorted(metrics["entries"]) == ["chain-a", "chain_b"]
    a, b = metrics["entries"]["chain-a"], metrics["entries"]["chain_b"]
    assert a["source"] == b["source"] == "local" and a["emdb_id"] is None
    # chain-a: a permuted, masked map with its model: every graph metric under its name
    n_ca = 141  # chain A of 5NI1
    for field in ("neural", "spline"):
        g = a["graph"][field]
        assert g["ca"] == n_ca and g["nodes"] > 0, g
        assert 0.0 <= g["precision"] <= 1.0 and g["rmsd"] > 0
    assert a["graph"]["spline"]["recall"] > 0.7  # the map's own chain
    assert a["map"]["shape_xyz"] == list(read_map_header(workdir / "maps/chain_a.mrc").shape_xyz)
    assert a["neural"]["regions"] >= 1
    assert set(a["interpolation"]["methods"]) == {"trilinear", "spline"}
    assert a["interpolation"]["methods"]["spline"]["mae"] > 0
    # chain_b: no model: the graphs are built, model metrics absent (null), never zero
    for field in ("neural", "spline"):
        g = b["graph"][field]
        assert g["nodes"] > 0 and g["model"] == "absent"
        for key in ("recall", "coverage", "precision", "rmsd", "ca", "nodes_per_ca"):
            assert g[key] is None, (field, key)
    assert b["interpolation"]["status"] == "not run" and "model" in b["interpolation"]["reason"]
    assert b["contour"] is None and b["neural"]["crop_shape_xyz"] == b["map"]["shape_xyz"]
    # the tables, figures and summary carry both names
    graph_csv = (results / "graph_evaluation.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in graph_csv[1:]] == ["chain-a", "chain_b"]
    row_b = graph_csv[2].split(",")
    assert row_b[3] == row_b[5] == row_b[6] == row_b[7] == "" and int(row_b[4]) > 0  # not 0
    assert (results / "summary.html").is_file()
    # each entry's view; chain_b's without a model, at the default level (no contour)
    view_b = (results / "view" / "chain_b.html").read_text()
    assert "id='model-note'>no model<" in view_b and "id='show-model'" not in view_b
    assert "id='show-model'" in (results / "view" / "chain-a.html").read_text()
    for name in ("training_time", "file_size", "graph_metrics", "interpolation_error"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 10_000
    # nothing downloaded or copied: the entries' folders hold only their info records
    assert sorted(p.name for p in (results / "data").rglob("*") if p.is_file()) == [
        "chain-a.entry.json",
        "chain_b.entry.json",
    ]


@pytest.mark.slow
def test_local_run_is_up_to_date_and_follows_the_map_file():
    workdir = local_workdir()
    cfg = str(workdir / "local.yaml")
    assert "Nothing to be done" in snakemake(workdir, "--configfile", cfg, "-n").stdout
    map_b = workdir / "maps" / "chain_b.mrc.gz"
    original, stat = map_b.read_bytes(), map_b.stat()
    vmap = read_map(map_b)  # the user's map changed (Snakemake compares contents, not times)
    write_permuted_mrc(
        map_b, vmap.data * 1.01, float(vmap.voxel_size[0]), vmap.origin, axes=(1, 2, 3)
    )
    os.utime(map_b, (stat.st_atime, stat.st_mtime + 3600))
    try:
        proc = snakemake(workdir, "--configfile", cfg, "-n", timeout=120)
        counts = job_counts(proc.stdout)
        assert counts["entry_info"] == counts["fit_neural"] == counts["fit_spline"] == 1
        entries = {m.group(1) for m in re.finditer(r"wildcards: entry=([\w-]+)", proc.stdout)}
        assert entries == {"chain_b"}, entries
    finally:
        map_b.write_bytes(original)
        os.utime(map_b, (stat.st_atime, stat.st_mtime))
    assert "Nothing to be done" in snakemake(workdir, "--configfile", cfg, "-n").stdout


def test_local_yaml_names_the_demo_files():
    text = (REPO / "config" / "local.yaml").read_text()
    config = yaml.safe_load(text)
    entry = config["entries"][0]
    assert (REPO / entry["map"]).resolve() == DEMO_MAP.resolve()
    assert (REPO / entry["model"]).resolve() == DEMO_MODEL.resolve()
    assert SNAKEFILE.is_file()
