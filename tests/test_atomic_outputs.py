"""No command leaves a half-written file under its final name.

Unit tests of :mod:`neural_em.atomic`, then real kills: ``neural-em resample``,
``fit --field spline``, ``query`` (and ``graph`` where it exists) run in subprocesses on
synthetic inputs large enough to take a few seconds, SIGKILLed after random delays; each
time the output must either not exist or be complete and valid. A deliberately non-atomic
writer killed the same way shows the check can see a torn file. Counts go to
``$NEURAL_EM_TEST_REPORT_DIR/atomic_outputs.json``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from helpers import gaussian_blobs, save_counts

from neural_em.atomic import atomic_path, atomic_write_bytes, atomic_write_text, check_output_path
from neural_em.fields import SplineDensityMap, load_field
from neural_em.voxelmap import write_map

REPO = Path(__file__).resolve().parents[1]
HAS_GRAPH_CLI = importlib.util.find_spec("neural_em.cli.graph") is not None
COUNTS: Counter = Counter()
#: Kills per command (random delays over the command's whole run time).
KILLS = int(os.environ.get("NEURAL_EM_TEST_KILLS", "8"))


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    save_counts(request, "atomic_outputs", COUNTS)


# ---------------------------------------------------------------------------- unit tests
def test_atomic_path_success_and_no_leftovers(tmp_path):
    out = tmp_path / "sub" / "a.mrc"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".a.mrc.")
        assert tmp.name.endswith(".mrc")  # writers that look at the suffix still work
        assert not out.exists()
        tmp.write_bytes(b"complete")
    assert out.read_bytes() == b"complete"
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.mrc"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_atomic_path_error_leaves_nothing(tmp_path, error):
    out = tmp_path / "b.neural"
    with pytest.raises(error):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_error_keeps_the_old_file(tmp_path):
    out = tmp_path / "c.txt"
    out.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(out, overwrite=True) as tmp:
            tmp.write_text("new but broken")
            raise ValueError
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.txt"]


def test_no_overwrite_without_permission(tmp_path):
    out = tmp_path / "d.txt"
    out.write_text("keep")
    with pytest.raises(FileExistsError, match="d.txt"):
        atomic_write_text(out, "x", overwrite=False)
    with pytest.raises(FileExistsError):
        check_output_path(out, overwrite=False)
    assert out.read_text() == "keep"
    atomic_write_text(out, "replaced", overwrite=True)
    assert out.read_text() == "replaced"


def test_permissions_follow_umask_and_existing_mode(tmp_path):
    """mkstemp makes 0600 files; outputs must get the usual mode (umask) instead."""
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "e.bin", b"x")
        assert stat.S_IMODE((tmp_path / "e.bin").stat().st_mode) == 0o644
        os.chmod(tmp_path / "e.bin", 0o640)
        atomic_write_bytes(tmp_path / "e.bin", b"y", overwrite=True)
        assert stat.S_IMODE((tmp_path / "e.bin").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_output_path_that_is_a_folder(tmp_path):
    (tmp_path / "f.mrc").mkdir()
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "f.mrc", b"x", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["f.mrc"]


def test_library_writers_are_atomic_on_error(tmp_path, monkeypatch):
    """write_map and field.save leave nothing when the writer fails half-way."""
    vmap = gaussian_blobs([[5.0, 5.0, 5.0]], shape_xyz=(10, 10, 10))
    import neural_em.fields.fileformat as ff
    import neural_em.voxelmap as vm

    def broken_save(*args, **kwargs):
        raise OSError("disk full (simulated)")

    class BrokenMrc:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            raise OSError("disk full (simulated)")

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(vm.mrcfile, "new", BrokenMrc)
    with pytest.raises(OSError):
        write_map(tmp_path / "g.mrc", vmap)
    monkeypatch.setattr(ff.safetensors.numpy, "save", broken_save)
    with pytest.raises(OSError):
        SplineDensityMap(vmap.normalised()).save(tmp_path / "g.neural")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- kills
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "neural_em.cli.main", "-q", *argv]


def _check_mrc(path: Path, shape_zyx: tuple[int, int, int]) -> None:
    assert mrcfile.validate(str(path), print_file=io.StringIO()), f"{path} is not valid MRC"
    with mrcfile.open(path) as mrc:
        assert mrc.data.shape == shape_zyx
        assert np.all(np.isfinite(mrc.data))


def _check_field(path: Path, shape_xyz: tuple[int, int, int]) -> None:
    field = load_field(path)
    assert field.shape_xyz == shape_xyz


def _check_csv(path: Path, n_rows: int) -> None:
    text = path.read_text()
    assert text.endswith("\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == n_rows + 1 and all(len(r) == 7 for r in rows)


def _check_graph(path: Path, _: object) -> None:
    from neural_em.graph.density_graph import DensityGraph

    DensityGraph.load(path)


def kill_repeatedly(
    name: str, argv: list[str], output: Path, check, expected, *, kills: int = KILLS, seed: int = 0
) -> dict:
    """Run ``argv`` once to completion (timed), then ``kills`` times SIGKILLed after random
    delays across its run time; after each kill ``output`` is absent or passes ``check``."""
    runs_s = []
    for _ in range(2):  # the first run pays cold caches: time two, keep the faster
        start = time.perf_counter()
        subprocess.run(argv, check=True, env=_env(), capture_output=True, timeout=600)
        runs_s.append(time.perf_counter() - start)
        check(output, expected)
        output.unlink()
    full_s = min(runs_s)
    rng = np.random.default_rng(seed)
    tally = Counter()
    attempts = 0
    while attempts < kills or (tally["killed"] == 0 and attempts < 4 * kills):
        attempts += 1
        # Kill somewhere inside the run (after interpreter start-up); shorter delays once
        # every run so far finished first (a faster machine than the timing suggested).
        upper = 0.95 * full_s if attempts <= kills else 0.5 * full_s
        delay = float(rng.uniform(min(0.2, 0.5 * upper), upper))
        proc = subprocess.Popen(
            argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        tally["runs"] += 1
        tally["killed" if not finished else "finished_before_kill"] += 1
        if output.exists():
            check(output, expected)  # raises on a torn file
            tally["output_complete"] += 1
            output.unlink()
        else:
            tally["output_absent"] += 1
        leftovers = [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]
        tally["temp_files_left_by_kill"] += len(leftovers)
        for p in leftovers:  # hidden temporaries never carry the final name
            assert p.name != output.name
            p.unlink()
    # A rerun after all that works.
    subprocess.run(argv, check=True, env=_env(), capture_output=True, timeout=600)
    check(output, expected)
    COUNTS[f"{name}_kills"] += tally["killed"]
    COUNTS[f"{name}_runs"] += tally["runs"]
    COUNTS["kills"] += tally["killed"]
    COUNTS["kills_output_absent"] += tally["output_absent"]
    COUNTS["kills_output_complete"] += tally["output_complete"]
    COUNTS["kills_output_corrupt"] += 0  # any torn file failed the check above
    COUNTS["temp_files_left_by_kill"] += tally["temp_files_left_by_kill"]
    return {"full_s": full_s, "killed": tally["killed"], **tally}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atomic")
    centres = np.random.default_rng(1).uniform(5, 75, size=(40, 3))
    vmap = gaussian_blobs(centres, shape_xyz=(80, 80, 80), sigma_A=2.0)
    map_path = tmp / "big.mrc"
    write_map(map_path, vmap)
    field_path = tmp / "big.neural"
    SplineDensityMap(vmap.normalised()).save(field_path)
    pts = np.random.default_rng(2).uniform(0, 79, size=(150_000, 3))
    points = tmp / "points.csv"
    np.savetxt(points, pts, delimiter=",", fmt="%.4f")
    return {
        "tmp": tmp,
        "map": map_path,
        "field": field_path,
        "points": points,
        "n_points": len(pts),
    }


@pytest.mark.slow
def test_kill_resample(inputs):
    out = inputs["tmp"] / "resampled.mrc"
    info = kill_repeatedly(
        "resample",
        _cli("resample", str(inputs["field"]), "-o", str(out), "--voxel-size", "0.5"),
        out,
        _check_mrc,
        (159, 159, 159),
        seed=1,
    )
    assert info["killed"] >= 1


@pytest.mark.slow
def test_kill_fit_spline(inputs):
    out = inputs["tmp"] / "fitted.neural"
    info = kill_repeatedly(
        "fit_spline",
        _cli("fit", str(inputs["map"]), "--field", "spline", "-o", str(out)),
        out,
        _check_field,
        (80, 80, 80),
        seed=2,
    )
    assert info["killed"] >= 1


@pytest.mark.slow
def test_kill_query(inputs):
    out = inputs["tmp"] / "values.csv"
    info = kill_repeatedly(
        "query",
        _cli("query", str(inputs["field"]), str(inputs["points"]), "-o", str(out)),
        out,
        _check_csv,
        inputs["n_points"],
        kills=max(2, KILLS // 2),
        seed=3,
    )
    assert info["killed"] >= 1


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GRAPH_CLI, reason="neural-em graph not present yet")
def test_kill_graph(inputs):
    out = inputs["tmp"] / "g.graph.json"
    info = kill_repeatedly(
        "graph",
        _cli("graph", str(inputs["field"]), "-o", str(out), "--min-nodes", "1"),
        out,
        _check_graph,
        None,
        kills=max(2, KILLS // 2),
        seed=4,
    )
    assert info["killed"] >= 1


NON_ATOMIC_WRITER = """
import sys, time
with open(sys.argv[1], "wb") as f:
    for _ in range(200):
        f.write(b"x" * 100_000)
        f.flush()
        time.sleep(0.01)
"""


def test_the_check_sees_a_torn_file(tmp_path):
    """Control: a writer that writes under the final name, killed half-way, leaves a file
    the checks reject; so the kill tests above could fail."""
    out = tmp_path / "torn.bin"
    proc = subprocess.Popen([sys.executable, "-c", NON_ATOMIC_WRITER, str(out)])
    deadline = time.time() + 30
    while (not out.exists() or out.stat().st_size < 1_000_000) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert out.exists() and out.stat().st_size < 200 * 100_000
    COUNTS["control_torn_files_detected"] += 1
