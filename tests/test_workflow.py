"""The Snakemake workflow: config validation, dry runs of the demo and the study's dataset, a real
smoke run of the demo (config/smoke.yaml), reruns, the Chimera and DeepTracer rule paths.

Every run uses ``--directory`` into a temporary folder, so the repository's results/ is never
touched. The smoke run is shared with tests/test_report.py (:func:`smoke_workdir`).
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SEARCH_CSV = REPO / "data" / "reference" / "emdb_search_highres.csv"


# ====================================================================== helpers
def snakemake(
    workdir: Path, *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile in ``workdir``; output in .stdout."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
        )
    return proc


def job_counts(output: str) -> Counter:
    """rule -> number of jobs, from the 'Job stats' table of a (dry) run."""
    counts: Counter = Counter()
    table = output.split("Job stats:", 1)
    if len(table) < 2:
        return counts
    for line in table[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def job_blocks(output: str) -> list[tuple[str, str]]:
    """(rule, block text) of every job a dry run prints."""
    out = []
    for block in re.split(r"\n(?=\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]\n)", output):
        m = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if m:
            out.append((m.group(1), block))
    return out


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_yaml(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def merged(*names: str) -> dict:
    """The config Snakemake sees: config.yaml updated by the named files (recursively)."""
    from snakemake.utils import update_config

    config = load_yaml("config.yaml")
    for name in names:
        update_config(config, load_yaml(name))
    return config


# ====================================================================== config
def test_configs_are_valid():
    from snakemake.utils import validate

    for names in ((), ("smoke.yaml",), ("paper.yaml",), ("local.yaml",)):
        validate(copy.deepcopy(merged(*names)), str(REPO / "config" / "schema.yaml"))


@pytest.mark.parametrize(
    "section, key", [("fit", "max_epoch"), ("download", "mirorr"), (None, "interpolations")]
)
def test_schema_rejects_a_wrong_key_naming_it(section, key):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = merged()
    if section:
        config[section][key] = 3
    else:
        config[key] = {}
    with pytest.raises(WorkflowError, match=key):
        validate(config, str(REPO / "config" / "schema.yaml"))


def test_wrong_key_stops_the_workflow_before_any_job(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"fit": {"max_epoch": 3}})
    proc = snakemake(tmp_path, "--configfile", str(bad), "--cores", "1", check=False, timeout=120)
    assert proc.returncode != 0
    assert "max_epoch" in proc.stdout and "was unexpected" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_wrong_value_is_refused(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"fit": {"preset": "fastest"}})
    proc = snakemake(tmp_path, "--configfile", str(bad), "-n", check=False, timeout=120)
    assert proc.returncode != 0 and "fastest" in proc.stdout


# ====================================================================== dry runs
DEMO_JOBS = {
    "dataset": 1,
    "download_metadata": 1,
    "download_map": 1,
    "download_model": 1,
    "download_fasta": 1,
    "entry_info": 1,
    "fit_neural": 1,
    "resample_neural": 1,
    "fit_spline": 1,
    "graph": 4,
    "evaluate_graph": 4,
    "interpolation": 1,
    "collect": 1,
    "figures": 1,
    "table_html": 6,
    "summary": 1,
    "view": 1,
    "all": 1,
}


def test_dry_run_demo(tmp_path):
    proc = snakemake(tmp_path, "-n", timeout=120)
    assert dict(job_counts(proc.stdout)) == DEMO_JOBS
    blocks = dict(job_blocks(proc.stdout))
    assert "gpu=1" in blocks["fit_neural"]
    for rule, block in job_blocks(proc.stdout):
        if rule != "all":  # every rule logs under logs/ and writes under results/
            assert re.search(r"^\s+log: logs/", block, re.M), rule
            assert re.search(r"^\s+output: results/", block, re.M), rule
            assert "mem_mb=" in block and "runtime=" in block, rule


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory) -> subprocess.CompletedProcess:
    """The study's dry run (8 cores, 7 GPUs), planned once for the tests that read it."""
    if not SEARCH_CSV.is_file():
        pytest.skip(f"{SEARCH_CSV} is absent")
    pytest.importorskip("neural_em.pipeline.dataset")
    return snakemake(
        tmp_path_factory.mktemp("paper"),
        "--configfile",
        str(REPO / "config" / "paper.yaml"),
        "--cores",
        "8",
        "--resources",
        "gpu=7",
        "-n",
        timeout=240,
    )


def test_dry_run_paper_plans_the_study(paper_dry_run):
    proc = paper_dry_run
    counts = job_counts(proc.stdout)
    n = counts["fit_neural"]
    assert 110 <= n <= 125, counts  # the study: 115 maps; this selection without voxel counts
    for rule in (
        "download_map",
        "download_metadata",
        "download_model",
        "download_fasta",
        "fit_spline",
        "interpolation",
        "resample_neural",
    ):
        assert counts[rule] == n, (rule, counts)
    assert counts["graph"] == counts["evaluate_graph"] == 4 * n  # 2 fields x 2 methods
    fits = [b for r, b in job_blocks(proc.stdout) if r == "fit_neural"]
    assert len(fits) == n
    assert all(re.search(r"resources: .*\bgpu=1\b", b) for b in fits)
    assert all("runtime=1440" in b for b in fits)  # the paper config's GPU budget
    graphs = [b for r, b in job_blocks(proc.stdout) if r == "graph"]
    neural_graphs = [b for b in graphs if "field=neural" in b]
    assert len(neural_graphs) == 2 * n and all(re.search(r"\bgpu=1\b", b) for b in neural_graphs)
    assert not any(
        re.search(r"\bgpu=1\b", b)
        for r, b in job_blocks(proc.stdout)
        if r in ("download_map", "collect", "fit_spline", "evaluate_graph")
        or (r == "graph" and "field=spline" in b)
    )


def test_dry_run_with_voxel_counts_drops_big_maps(paper_dry_run, tmp_path):
    """After the voxel_counts step, the selection skips maps over max_voxels."""
    paper = str(REPO / "config" / "paper.yaml")
    first = job_blocks(paper_dry_run.stdout)  # the plan before any voxel count
    keys = sorted(
        re.search(r"wildcards: entry=(\w+)", b).group(1) for r, b in first if r == "fit_neural"
    )
    counts = tmp_path / "results" / "dataset" / "voxel_counts.csv"
    counts.parent.mkdir(parents=True)
    big = keys[0]
    counts.write_text(
        f"emdb_id,key,shape_xyz,voxels,over_limit\nEMD-{big[4:]},{big},600 600 600,{600**3},True\n"
    )
    second = job_blocks(snakemake(tmp_path, "--configfile", paper, "-n", timeout=240).stdout)
    keys2 = sorted(
        re.search(r"wildcards: entry=(\w+)", b).group(1) for r, b in second if r == "fit_neural"
    )
    assert big not in keys2
    assert len(keys2) >= len(keys) - 1


def test_chimera_rule_path(tmp_path):
    """With a Chimera executable configured, Chimera's maps feed the experiment."""
    fake = tmp_path / "fake_chimera"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    cfg = write_config(tmp_path / "chimera.yaml", {"interpolation": {"chimera": str(fake)}})
    proc = snakemake(tmp_path, "--configfile", str(cfg), "-n", "-p", timeout=120)
    counts = job_counts(proc.stdout)
    assert counts["chimera_maps"] == 1 and counts["interpolation"] == 1
    block = dict(job_blocks(proc.stdout))["chimera_maps"]
    assert f"--chimera {fake}" in block or f"--chimera '{fake}'" in block
    assert "--resolution 3.2" in block and "--fine-step 0.2" in block
    interp = dict(job_blocks(proc.stdout))["interpolation"]
    assert "chimera/coarse.mrc" in interp and "chimera/trilinear.mrc" in interp
    # and from the environment variable
    env_proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(SNAKEFILE),
            "--directory",
            str(tmp_path),
            "-n",
        ],
        env={**os.environ, "CHIMERA_PATH": str(fake)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert job_counts(env_proc.stdout)["chimera_maps"] == 1


FAKE_CHIMERA = """#!{python}
# A stand-in for Chimera: reads the command file, writes a small map for each 'volume save'.
import sys
import numpy as np
from neural_em.voxelmap import write_map
cmd = [a for a in sys.argv[1:] if not a.startswith("--")][0]
lines = open(cmd).read().splitlines()
assert lines[1].startswith("molmap #0@C,N,O"), lines
for line in lines:
    if line.startswith("volume #") and " save " in line:
        n = int(line.split()[1][1:])
        spacing = 1.0 if n == 1 else 0.5
        write_map(line.split(" save ", 1)[1], np.full((4, 4, 4), float(n), np.float32),
                  voxel_size=spacing, overwrite=True)
sys.exit({code})
"""


@pytest.mark.parametrize("code", [0, 3])
def test_chimera_script_with_a_fake_chimera(tmp_path, code):
    fake = tmp_path / "chimera"
    fake.write_text(FAKE_CHIMERA.format(python=sys.executable, code=code))
    fake.chmod(0o755)
    model = REPO / "data" / "demo" / "mirror" / "files.rcsb.org" / "download" / "5ni1.cif.gz"
    outs = {k: tmp_path / "out" / f"{k}.mrc" for k in ("coarse", "fine", "trilinear")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "chimera_molmap.py"),
            "--model",
            str(model),
            "--resolution",
            "3.2",
            "--fine-step",
            "0.2",
            "--coarse",
            str(outs["coarse"]),
            "--fine",
            str(outs["fine"]),
            "--trilinear",
            str(outs["trilinear"]),
            "--commands",
            str(tmp_path / "out" / "molmap.cmd"),
            "--chimera",
            str(fake),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    commands = (tmp_path / "out" / "molmap.cmd").read_text()
    assert "molmap #0@C,N,O 3.2 modelId 1" in commands
    assert "molmap #0@C,N,O 3.2 gridSpacing 0.2 modelId 2" in commands
    assert "vop resample #1 onGrid #2 modelId 3" in commands
    left = sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".mrc")
    if code == 0:
        assert proc.returncode == 0, proc.stdout
        assert all(p.is_file() for p in outs.values())
        assert left == ["coarse.mrc", "fine.mrc", "trilinear.mrc"]  # no temporaries left
    else:
        assert proc.returncode == code
        assert left == []  # nothing half-made under any name


def test_deeptracer_runs_only_when_configured(tmp_path):
    proc = snakemake(tmp_path, "-n", timeout=120)
    assert "deeptracer" not in job_counts(proc.stdout)
    cfg = write_config(
        tmp_path / "dt.yaml",
        {"deeptracer": {"command": "deeptracer-cli --map {map} --fasta {fasta} --out {output}"}},
    )
    proc = snakemake(tmp_path, "--configfile", str(cfg), "-n", timeout=120)
    counts = job_counts(proc.stdout)
    assert counts["deeptracer"] == 1 and counts["evaluate_deeptracer"] == 1
    assert counts["download_fasta"] == 1
    assert "gpu=1" in dict(job_blocks(proc.stdout))["deeptracer"]


def test_gpu_slot_wrapper(tmp_path):
    pytest.importorskip("neural_em.pipeline.gpu_slots")
    record = tmp_path / "record.json"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "with_gpu_slot.py"),
            "--record",
            str(record),
            "--",
            sys.executable,
            "-c",
            "import sys, os; print('ARGS', sys.argv[1:])",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout
    device = json.loads(record.read_text())["device"]
    assert device in ("cpu", "cuda")
    assert f"ARGS ['--device', '{device}']" in proc.stdout
    # a failing command: its exit code, and no record
    record.unlink()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "with_gpu_slot.py"),
            "--record",
            str(record),
            "--",
            sys.executable,
            "-c",
            "import sys; sys.exit(7)",
        ],
        timeout=60,
        env=env,
    )
    assert proc.returncode == 7 and not record.exists()


# ====================================================================== the smoke run
_SMOKE: dict[str, Path] = {}


def smoke_workdir() -> Path:
    """The demo run with config/smoke.yaml (once per test session, shared with
    test_report.py). Its folder is our own temporary folder, removed at exit: pytest's
    numbered temporary folders are pruned by other pytest sessions running at the same time."""
    if "dir" not in _SMOKE:
        workdir = Path(tempfile.mkdtemp(prefix="neural-em-smoke-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        snakemake(
            workdir,
            "--configfile",
            str(REPO / "config" / "smoke.yaml"),
            "--cores",
            "2",
            timeout=900,
        )
        _SMOKE["dir"] = workdir
    return _SMOKE["dir"]


@pytest.fixture(scope="session")
def smoke():
    return smoke_workdir()


def smoke_args() -> list[str]:
    return ["--configfile", str(REPO / "config" / "smoke.yaml"), "--cores", "2"]


@pytest.mark.slow
def test_smoke_run_outputs(smoke):
    results = smoke / "results"
    metrics = json.loads((results / "metrics.json").read_text())
    entry = metrics["entries"]["emd_3488"]
    assert entry["resolution"] == 3.2 and entry["pdb_id"] == "5ni1"
    for field in ("neural", "spline"):
        g = entry["graph"][field]
        assert g["ca"] == 574 and g["nodes"] > 0
        assert 0.0 <= g["recall"] <= 1.0 and 0.0 <= g["precision"] <= 1.0
    # the spline graph of EMD-3488 is the method's reference case (recall 0.946, issue 3)
    assert entry["graph"]["spline"]["recall"] > 0.9
    # the backbone graph beside it (measured on the demo crop: recall 0.963, one-to-one
    # precision 0.775, chain recall 0.908, edge precision 0.689, 1.24 nodes per C-alpha)
    backbone, study = entry["graph_backbone"]["spline"], entry["graph"]["spline"]
    assert backbone["recall"] > 0.9 and backbone["one_to_one_precision"] > 0.7
    assert backbone["one_to_one_precision"] > study["one_to_one_precision"] + 0.2
    assert backbone["chain_recall"] > 0.8 and backbone["edge_precision"] > 0.6
    assert backbone["edge_precision"] > 5 * study["edge_precision"]
    rows = (results / "graph_methods.csv").read_text().splitlines()
    assert len(rows) == 5 and {r.split(",")[2] for r in rows[1:]} == {"study", "backbone"}
    assert (results / "figures" / "graph_methods.png").stat().st_size > 10_000
    methods = entry["interpolation"]["methods"]
    assert set(methods) == {"trilinear", "fourier", "spline", "neural"}
    assert methods["spline"]["mae"] < methods["trilinear"]["mae"]  # measured: 2-3x smaller
    assert entry["deeptracer"] == {"status": "not run"}
    assert entry["neural"]["device"] in ("cpu", "cuda")
    for name in (
        "training_time",
        "file_size",
        "graph_metrics",
        "graph_methods",
        "interpolation_error",
    ):
        for ext in ("png", "svg"):
            assert (results / "figures" / f"{name}.{ext}").stat().st_size > 10_000
    graph_csv = (results / "graph_evaluation.csv").read_text().splitlines()
    assert graph_csv[0].startswith("EMDB ID,PDB ID,Resolution,Num. C-a,Num. nodes")
    assert ",not run,not run," in graph_csv[1]
    summary = (results / "summary.html").read_text()
    assert summary.count("data:image/png;base64,") == 5
    assert "href='view/emd_3488.html'" in summary and "href='view/emd_3488.cxc'" in summary
    assert "graph_backbone_spline_f1_median" not in summary  # tables, not raw keys
    assert (results / "view" / "emd_3488.html").stat().st_size < 20e6
    # no temporary or partial file left beside the outputs
    leftovers = [p for p in results.rglob("*") if p.name.startswith(".") and p.is_file()]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_learned_field_in_the_pipeline(smoke, tmp_path):
    """graph.fields with learned: its fit, graph and metrics reach metrics.json (on a copy of
    the smoke run, so only the learned field's jobs and the collection run)."""
    work = tmp_path / "learned"
    shutil.copytree(smoke, work, symlinks=True)
    extra = write_config(
        tmp_path / "learned.yaml",
        {"graph": {"fields": ["spline", "learned"], "methods": ["study"]}},
    )
    proc = snakemake(
        work,
        "--configfile",
        str(REPO / "config" / "smoke.yaml"),
        str(extra),
        "--cores",
        "2",
        "results/metrics.json",
        timeout=600,
    )
    ran = job_counts(proc.stdout)
    assert ran["fit_field"] == 1 and ran["fit_neural"] == 0 and ran["fit_spline"] == 0
    metrics = json.loads((work / "results" / "metrics.json").read_text())
    assert metrics["graph_fields"] == ["spline", "learned"]
    entry = metrics["entries"]["emd_3488"]
    assert entry["learned"]["bytes"] > 100_000 and entry["learned"]["fit_s"] > 0
    assert entry["spline"]["bytes"] > 0 and entry["spline"]["fit_s"] > 0
    learned = entry["graph"]["learned"]
    assert learned["ca"] == 574 and learned["nodes"] > 0 and learned["recall"] > 0.5
    assert entry["graph"]["neural"] == {"status": "not run"}


@pytest.mark.slow
def test_second_run_does_nothing(smoke):
    proc = snakemake(smoke, *smoke_args(), "-n", timeout=120)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


DOWNSTREAM = {"collect": 1, "figures": 1, "table_html": 6, "summary": 1, "all": 1}


@pytest.mark.slow
@pytest.mark.parametrize(
    "output, expected",
    [
        ("results/metrics.json", DOWNSTREAM),
        ("results/figures/file_size.png", {"figures": 1, "summary": 1, "all": 1}),
        ("results/tables/graph.html", {"table_html": 1, "all": 1}),
    ],
)
def test_deleting_one_output_reruns_only_its_dependents(smoke, output, expected):
    path = smoke / output
    backup = path.with_name(path.name + ".bak")
    path.rename(backup)  # a rename keeps the file's time, so putting it back restores all
    try:
        proc = snakemake(smoke, *smoke_args(), "-n", timeout=120)
        assert dict(job_counts(proc.stdout)) == expected
    finally:
        backup.rename(path)
    assert "Nothing to be done" in snakemake(smoke, *smoke_args(), "-n").stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "output, producer",
    [
        ("results/interpolation/emd_3488.json", "interpolation"),
        ("results/graphs/emd_3488/spline.study.metrics.json", "evaluate_graph"),
        ("results/fits/emd_3488/emd_3488_neural.mrc", "resample_neural"),
    ],
)
def test_regenerated_intermediate_reruns_only_its_dependents(smoke, output, producer):
    """Snakemake leaves a deleted intermediate file alone while everything after it is up to
    date (as for temp files); asked for, only its own job runs, and once it is newer only the
    jobs after it rerun."""
    path = smoke / output
    original = path.read_bytes()
    stat = path.stat()
    path.unlink()
    try:
        unasked = snakemake(smoke, *smoke_args(), "-n", timeout=120)
        assert "Nothing to be done" in unasked.stdout
        asked = snakemake(smoke, *smoke_args(), "-n", output, timeout=120)
        assert dict(job_counts(asked.stdout)) == {producer: 1}
        # remade with new content (Snakemake compares checksums of small files, not only times)
        path.write_bytes(original + b"\n")
        os.utime(path, (stat.st_atime, stat.st_mtime + 3600))
        after = snakemake(smoke, *smoke_args(), "-n", timeout=120)
        assert dict(job_counts(after.stdout)) == DOWNSTREAM
    finally:
        path.write_bytes(original)
        os.utime(path, (stat.st_atime, stat.st_mtime))
    assert "Nothing to be done" in snakemake(smoke, *smoke_args(), "-n").stdout


@pytest.mark.slow
def test_summary_lists_every_output_as_up_to_date(smoke):
    proc = snakemake(smoke, *smoke_args(), "--summary", timeout=120)
    rows = [ln.split("\t") for ln in proc.stdout.splitlines() if ln.startswith("results/")]
    assert len(rows) > 20
    header = next(ln.split("\t") for ln in proc.stdout.splitlines() if ln.startswith("output_file"))
    status, plan = header.index("status"), header.index("plan")
    stale = {
        r[0]: (r[status], r[plan]) for r in rows if r[status] != "ok" or r[plan] != "no update"
    }
    assert not stale, stale


def test_docs_show_the_commands():
    text = (REPO / "docs" / "workflow.md").read_text()
    for cmd in (
        "snakemake --cores 2",
        "snakemake --report results/report.html",
        "--configfile config/paper.yaml",
        "config/smoke.yaml",
    ):
        assert cmd in text, cmd
    assert textwrap.dedent(text)
