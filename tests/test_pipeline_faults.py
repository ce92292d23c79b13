"""The demo workflow under faults, and downloads cut half-way.

In a temporary copy of the repository (the files git tracks or would track, plus data/demo;
never ../shared), ``snakemake --cores 2 --configfile config/smoke.yaml`` (with a coarser
interpolation control grid, to keep the test to minutes) is

1. SIGKILLed with all its jobs once some outputs are finished and a job is running (a
   pre-empted node);
2. rerun, and one running job (a ``neural-em`` process) SIGKILLed on its own;
3. rerun to the end.

Checks: it completes; outputs finished before the kills keep their modification times (not
recomputed); every file under ``results/`` is complete and valid after each kill and at the
end; a last dry run has nothing to do. Downloads: a body cut half-way, a truncated gzip and a
download process SIGKILLed mid-transfer never leave a file under the final name. Counts go to
``$NEURAL_EM_TEST_REPORT_DIR/pipeline_faults.json``.
"""

from __future__ import annotations

import base64
import csv
import gzip
import http.server
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import save_counts

REPO = Path(__file__).resolve().parents[1]
HAS_WORKFLOW = (REPO / "Snakefile").is_file() and (REPO / "config" / "smoke.yaml").is_file()
HAS_DOWNLOAD = importlib.util.find_spec("neural_em.pipeline.download") is not None
HAS_NEURAL = importlib.util.find_spec("neural_em.fields.neural") is not None
COUNTS: Counter = Counter()
#: Longest wait for the smoke workflow to reach a state or finish (seconds).
WORKFLOW_TIMEOUT_S = int(os.environ.get("NEURAL_EM_FAULT_TIMEOUT_S", "1500"))


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    save_counts(request, "pipeline_faults", COUNTS)


# ---------------------------------------------------------------------------- validation
def validate_output(path: Path) -> str:
    """Raise if ``path`` is not a complete file of its kind; returns the kind checked."""
    name = path.name.lower()
    if name.endswith(".neural"):
        from neural_em.fields import load_field

        load_field(path)
        return "neural"
    if name.endswith((".mrc", ".map", ".mrc.gz", ".map.gz", ".ccp4")):
        from neural_em.voxelmap import read_map

        read_map(path)
        return "map"
    if name.endswith(".graph.json"):
        from neural_em.graph.density_graph import DensityGraph

        DensityGraph.load(path)
        return "graph"
    if name.endswith(".json"):
        json.loads(path.read_text())
        return "json"
    if name.endswith((".csv", ".tsv")):
        text = path.read_text()
        assert text.endswith("\n") or text == "", f"{path}: last line cut"
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if name.endswith(".tsv") else ","))
        widths = {len(r) for r in rows if r}
        assert len(widths) <= 1, f"{path}: rows of different widths {widths}"
        return "table"
    if name.endswith((".cif", ".cif.gz", ".pdb", ".pdb.gz")):
        import gemmi

        if name.endswith(".gz"):
            with gzip.open(path) as handle:
                handle.read()
        gemmi.read_structure(str(path)) if "graph" not in name else gemmi.cif.read(str(path))
        return "model"
    if name.endswith(".png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[-12:-4] == b"\x00\x00\x00\x00IEND", (
            f"{path}: incomplete PNG"
        )
        return "png"
    if name.endswith(".svg"):
        import xml.etree.ElementTree as ET

        ET.parse(path)
        return "svg"
    if name.endswith(".html"):
        assert "</html>" in path.read_text(errors="replace").lower(), f"{path}: cut HTML"
        return "html"
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                npz[key]
        return "npz"
    if name.endswith(".gz"):
        with gzip.open(path) as handle:
            while handle.read(1 << 20):
                pass
        return "gzip"
    if name.endswith((".fasta", ".fa")):
        assert path.read_text().startswith(">"), f"{path}: not FASTA"
        return "fasta"
    return "unchecked"


def incomplete_marked(copy: Path) -> set[Path]:
    """Outputs Snakemake itself marks as incomplete (its jobs had not finished)."""
    folder = copy / ".snakemake" / "incomplete"
    marked = set()
    if folder.is_dir():
        for p in folder.iterdir():
            for decode in (base64.urlsafe_b64decode, base64.b64decode):
                try:
                    marked.add((copy / decode(p.name.encode()).decode()).resolve())
                    break
                except Exception:  # noqa: BLE001 - unknown encoding: skip
                    continue
    return marked


def check_results(copy: Path, stage: str) -> dict[Path, float]:
    """Validate every output under results/ (hidden temporaries apart); return their mtimes."""
    mtimes = {}
    for path in sorted((copy / "results").rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith("."):
            COUNTS[f"hidden_temporaries_after_{stage}"] += 1
            continue
        try:
            kind = validate_output(path)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(
                f"after {stage}: {path.relative_to(copy)} is corrupt: {type(exc).__name__}: {exc}"
            )
        COUNTS[f"outputs_checked_{kind}"] += 1
        mtimes[path.resolve()] = path.stat().st_mtime_ns
    return mtimes


# ---------------------------------------------------------------------------- workflow
def copy_repo(dest: Path) -> Path:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    files = {f for f in listed if f}
    demo = REPO / "data" / "demo"
    if demo.is_dir():
        files |= {str(p.relative_to(REPO)) for p in demo.rglob("*") if p.is_file()}
    for rel in sorted(files):
        src = REPO / rel
        if not src.is_file() or rel.startswith(("results/", "logs/", ".snakemake/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    # Over the smoke config: a coarser control grid for the interpolation experiment (the
    # neural field evaluated at 0.2 Å over the whole map takes many minutes on a loaded CPU),
    # its quick methods only, and the study's graph method only: the kills and reruns need
    # jobs of every kind (downloads, fits, graphs, evaluations, collection, figures), not
    # every method of each (the smoke run in tests/test_workflow.py runs them all).
    (dest / "config" / "faults_overlay.yaml").write_text(
        "interpolation:\n  methods: [trilinear, spline]\n  fine_step_A: 0.6\n"
        "graph:\n  methods: [study]\n"
    )
    return dest


def _env(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def snakemake_cmd(*extra: str) -> list[str]:
    exe = shutil.which("snakemake")
    base = [exe] if exe else [sys.executable, "-m", "snakemake"]
    return [
        *base,
        "--cores",
        "2",
        "--configfile",
        "config/smoke.yaml",
        "config/faults_overlay.yaml",
        *extra,
    ]


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
        cmdlines[int(entry.name)] = cmd
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append((child, cmdlines.get(child, "")))
            todo.append(child)
    return out


def running_jobs(pid: int) -> list[tuple[int, str]]:
    return [
        (p, c)
        for p, c in descendants(pid)
        if ("neural-em" in c or "neural_em" in c or "scripts/" in c)
        and "snakemake" not in c.split(" ")[0]
    ]


def finished_outputs(copy: Path) -> list[Path]:
    return (
        [p for p in (copy / "results").rglob("*") if p.is_file() and not p.name.startswith(".")]
        if (copy / "results").is_dir()
        else []
    )


def wait_for(condition, timeout_s: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the workflow ended (exit {proc.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def start(copy: Path, log: Path, *extra: str) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(
        snakemake_cmd(*extra),
        cwd=copy,
        env=_env(copy),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_WORKFLOW, reason="workflow (Snakefile, config/smoke.yaml) not present yet"
)
@pytest.mark.skipif(
    shutil.which("snakemake") is None and importlib.util.find_spec("snakemake") is None,
    reason="snakemake not installed",
)
def test_workflow_survives_kills(tmp_path):
    if not HAS_NEURAL:
        pytest.skip("the demo's neural fits need neural_em.fields.neural (not present yet)")
    copy = copy_repo(tmp_path / "repo")
    log = tmp_path / "snakemake.log"

    # 1. Pre-emption: SIGKILL snakemake and every job once a field file exists (downloads,
    # dataset and fits done) and a job runs.
    proc = start(copy, log)
    wait_for(
        lambda: (
            any(p.suffix == ".neural" for p in finished_outputs(copy)) and running_jobs(proc.pid)
        ),
        WORKFLOW_TIMEOUT_S,
        "a finished field file and a running job",
        proc,
    )
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    COUNTS["snakemake_kills"] += 1
    time.sleep(0.5)
    after_kill = check_results(copy, "snakemake_kill")
    incomplete = incomplete_marked(copy)
    finished_before = {p: m for p, m in after_kill.items() if p not in incomplete}
    COUNTS["outputs_marked_incomplete_by_snakemake"] += len(incomplete)
    assert len(finished_before) >= 3, (
        f"too few finished outputs to watch: {sorted(map(str, finished_before))}; "
        f"incomplete: {sorted(map(str, incomplete))}"
    )

    # 2. What a user does after a pre-emption (Snakemake's own advice): remove the stale lock,
    # rerun with --rerun-incomplete. Then SIGKILL one running job on its own.
    unlock = subprocess.run(
        snakemake_cmd("--unlock"),
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    proc = start(copy, log, "--rerun-incomplete")
    before = {p for p, _ in running_jobs(proc.pid)}

    def new_job():
        return [
            j
            for j in running_jobs(proc.pid)
            if j[0] not in before and ("neural-em" in j[1] or "neural_em" in j[1])
        ]

    wait_for(new_job, WORKFLOW_TIMEOUT_S, "a running neural-em job", proc)
    time.sleep(1.0)  # into the job's work, not its start-up
    jobs = new_job() or running_jobs(proc.pid)
    if not jobs:
        pytest.fail("the job ended before it could be killed")
    # The neural-em process itself rather than the shell around it.
    victim = max(
        jobs, key=lambda j: Path(j[1].split(" ")[0]).name.startswith(("python", "neural-em"))
    )
    os.kill(victim[0], signal.SIGKILL)
    COUNTS["job_kills"] += 1
    try:
        proc.wait(timeout=WORKFLOW_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("snakemake did not stop after its job was killed")
    assert proc.returncode != 0, "a killed job must fail the run"
    check_results(copy, "job_kill")

    # 3. The plain command again (snakemake stopped cleanly after its job failed, so no lock
    # and no incomplete marks should remain): must complete.
    plain = subprocess.run(
        snakemake_cmd(),
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        timeout=WORKFLOW_TIMEOUT_S,
    )
    COUNTS["plain_rerun_completed"] += int(plain.returncode == 0)
    if plain.returncode != 0:
        assert "incomplete" in (plain.stdout + plain.stderr).lower(), plain.stderr[-2000:]
        COUNTS["plain_rerun_needed_rerun_incomplete"] += 1
        final = subprocess.run(
            snakemake_cmd("--rerun-incomplete"),
            cwd=copy,
            env=_env(copy),
            capture_output=True,
            text=True,
            timeout=WORKFLOW_TIMEOUT_S,
        )
        assert final.returncode == 0, final.stderr[-3000:]
    COUNTS["workflow_completed_after_kills"] += 1
    final_mtimes = check_results(copy, "completion")
    recomputed = [
        str(p.relative_to(copy.resolve()))
        for p, m in finished_before.items()
        if final_mtimes.get(p) != m
    ]
    COUNTS["finished_outputs_watched"] += len(finished_before)
    COUNTS["finished_outputs_recomputed"] += len(recomputed)
    assert not recomputed, f"finished outputs were recomputed: {recomputed}"
    dry = subprocess.run(
        snakemake_cmd("-n"), cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=600
    )
    assert dry.returncode == 0 and "Nothing to be done" in (dry.stdout + dry.stderr), dry.stdout[
        -2000:
    ]


# ---------------------------------------------------------------------------- downloads
class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    announce = 0
    send = 0
    delay_s = 0.0

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(self.announce))
        self.end_headers()
        sent = 0
        step = 4096
        while sent < self.send:
            self.wfile.write(self.body[sent : min(self.send, sent + step)])
            self.wfile.flush()
            sent += step
            if self.delay_s:
                time.sleep(self.delay_s)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    handler = type("H", (_Handler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/file.map.gz"
    httpd.shutdown()
    httpd.server_close()


def _gz_payload() -> bytes:
    return gzip.compress(os.urandom(300_000))


@pytest.mark.skipif(not HAS_DOWNLOAD, reason="neural_em.pipeline.download not present yet")
def test_download_cut_half_way_is_never_used(server, tmp_path):
    from neural_em.pipeline.download import DownloadError, check_gzip_complete, fetch

    handler, url = server
    body = _gz_payload()
    handler.body, handler.announce, handler.send = body, len(body), len(body) // 2
    dest = tmp_path / "emd.map.gz"
    with pytest.raises(DownloadError):
        fetch(url, dest, retries=1, backoff_s=0, timeout_s=5, validate=check_gzip_complete)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    COUNTS["downloads_cut_refused"] += 1
    # The server believes a cut file is whole (announces the cut length): the gzip check
    # still refuses it.
    handler.announce = handler.send = len(body) // 2
    with pytest.raises(DownloadError):
        fetch(url, dest, retries=0, timeout_s=5, validate=check_gzip_complete)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    COUNTS["downloads_cut_refused"] += 1
    handler.announce = handler.send = len(body)
    fetch(url, dest, retries=0, timeout_s=5, validate=check_gzip_complete)
    assert dest.read_bytes() == body


KILLED_FETCH = """
import sys
from neural_em.pipeline.download import check_gzip_complete, fetch
fetch(sys.argv[1], sys.argv[2], retries=0, timeout_s=30, validate=check_gzip_complete)
"""


@pytest.mark.skipif(not HAS_DOWNLOAD, reason="neural_em.pipeline.download not present yet")
def test_download_killed_mid_transfer_leaves_no_file(server, tmp_path):
    from neural_em.pipeline.download import check_gzip_complete, fetch

    handler, url = server
    body = _gz_payload()
    handler.body, handler.announce, handler.send = body, len(body), len(body)
    handler.delay_s = 0.01  # ~75 packets: about a second
    dest = tmp_path / "emd.map.gz"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for delay in (0.6, 1.0, 1.4):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_FETCH, url, str(dest)], env=env)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if dest.exists():
            assert dest.read_bytes() == body, "a cut download sits under the final name"
            dest.unlink()
        COUNTS["downloads_killed"] += int(killed)
        for p in tmp_path.iterdir():  # hidden temporaries from the kill
            assert p.name.startswith("."), p
            p.unlink()
    handler.delay_s = 0.0
    fetch(url, dest, retries=0, timeout_s=5, validate=check_gzip_complete)
    assert dest.read_bytes() == body
