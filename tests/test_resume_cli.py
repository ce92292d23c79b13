"""Interrupted fits resume: ``neural-em fit`` SIGKILLed after its checkpoint appears, rerun
with the same arguments, continues from it and gives the uninterrupted fit's result.

* ``paper`` preset (regions trained one after another): killed once the first region is
  checkpointed; the rerun logs that it resumes with that region done, trains only the rest,
  and its field equals the uninterrupted fit's.
* ``fast`` preset (all regions in one batched group) with a checkpoint every epoch
  (``NEURAL_EM_CHECKPOINT_EVERY_S=0``): killed mid-training; the rerun continues the group.
* ``--time-budget`` and ``--max-epochs`` are honoured and reported (stop reasons in the report
  and the file).
* A checkpoint that is a crafted pickle, corrupt, or from another fit is never trusted: it is
  ignored with a warning (the marker never appears) and the fit starts afresh.

Counts go to ``$NEURAL_EM_TEST_REPORT_DIR/resume.json``.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import gaussian_blobs, save_counts

from neural_em.voxelmap import write_map

REPO = Path(__file__).resolve().parents[1]
HAS_NEURAL = importlib.util.find_spec("neural_em.fields.neural") is not None
pytestmark = pytest.mark.skipif(
    not HAS_NEURAL,
    reason="neural module (neural_em.fields.neural) not present yet: nothing to resume",
)
COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    save_counts(request, "resume", COUNTS)


def checkpoint_of(output: Path) -> Path:
    """Where ``neural-em fit`` keeps the checkpoint of ``output`` (see cli/fit.py)."""
    return output.with_name(f".{output.name}.checkpoint")


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def fit_cmd(map_path: Path, out: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "neural_em.cli.main",
        "fit",
        str(map_path),
        "-o",
        str(out),
        "--seed",
        "3",
        *args,
    ]


def run_fit(argv: list[str], **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(**env), timeout=900)
    return proc, time.perf_counter() - start


def training_header(path: Path) -> dict:
    from neural_em.fields.fileformat import read_field_file

    header, _ = read_field_file(path)
    return header


def assert_same_field(a: Path, b: Path, tol: float) -> float:
    """Densities of two fields on a grid agree within ``tol``; returns the max difference."""
    from neural_em.fields import load_field

    fa, fb = load_field(a), load_field(b)
    assert fa.shape_xyz == fb.shape_xyz
    da, db = fa.sample_densities(1.0), fb.sample_densities(1.0)
    diff = float(np.max(np.abs(da - db)))
    assert diff <= tol, f"resumed fit differs from the uninterrupted one by {diff:g}"
    return diff


def kill_after_checkpoint(
    argv: list[str],
    ckpt: Path,
    out: Path,
    *,
    settle_s: float = 0.0,
    timeout_s: float = 600,
    **env: str,
) -> float:
    """Start ``argv``; SIGKILL it once ``ckpt`` exists (plus ``settle_s``); returns when."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout_s
    while not ckpt.exists():
        if proc.poll() is not None:
            pytest.fail(f"the fit ended (exit {proc.returncode}) before its checkpoint appeared")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared")
        time.sleep(0.05)
    time.sleep(settle_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    COUNTS["kills"] += 1
    assert not out.exists(), "a killed fit left its output"
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    # 100 voxels along x: two paper regions (64 max, overlap 4).
    long = gaussian_blobs(
        rng.uniform(3, [97, 17, 17], size=(14, 3)), shape_xyz=(100, 20, 20), sigma_A=1.5
    )
    small = gaussian_blobs(rng.uniform(3, 25, size=(8, 3)), shape_xyz=(28, 28, 28), sigma_A=1.5)
    out = {"long": tmp / "long.mrc", "small": tmp / "small.mrc", "tmp": tmp}
    write_map(out["long"], long)
    write_map(out["small"], small)
    return out


@pytest.mark.slow
def test_paper_fit_resumes_after_first_region(maps, tmp_path):
    args = ("--preset", "paper", "--max-epochs", "3")
    ref = tmp_path / "ref.neural"
    proc, full_s = run_fit(fit_cmd(maps["long"], ref, *args))
    assert proc.returncode == 0, proc.stderr
    assert not checkpoint_of(ref).exists(), "checkpoint left after a finished fit"
    regions = training_header(ref)["training"]["regions"]
    assert len(regions) == 2

    out = tmp_path / "out.neural"
    kill_after_checkpoint(fit_cmd(maps["long"], out, *args), checkpoint_of(out), out)
    proc, resumed_s = run_fit(fit_cmd(maps["long"], out, *args))
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr + proc.stdout
    assert "resuming from checkpoint" in log and "1 group(s) done" in log, log[-2000:]
    assert not checkpoint_of(out).exists()
    diff = assert_same_field(ref, out, tol=1e-6)
    COUNTS["resumed_runs_survived"] += 1
    COUNTS["paper_max_difference_x1e9"] = int(diff * 1e9)
    # Only the second region was trained again: less time than the whole fit (generous for a
    # loaded machine: the first region is half the training).
    assert resumed_s < full_s, (resumed_s, full_s)


@pytest.mark.slow
def test_fast_fit_resumes_mid_group(maps, tmp_path):
    # Enough epochs that the fit is still running well after its first checkpoint, also on an
    # idle machine (12 epochs finished within the 0.5 s settle time there).
    args = ("--preset", "fast", "--max-epochs", "80")
    ref = tmp_path / "ref.neural"
    proc, _ = run_fit(fit_cmd(maps["small"], ref, *args))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.neural"
    kill_after_checkpoint(
        fit_cmd(maps["small"], out, *args),
        checkpoint_of(out),
        out,
        settle_s=0.1,
        NEURAL_EM_CHECKPOINT_EVERY_S="0",
    )
    proc, _ = run_fit(fit_cmd(maps["small"], out, *args), NEURAL_EM_CHECKPOINT_EVERY_S="0")
    assert proc.returncode == 0, proc.stderr
    assert "resuming from checkpoint" in proc.stderr + proc.stdout
    assert_same_field(ref, out, tol=1e-6)
    COUNTS["resumed_runs_survived"] += 1


@pytest.mark.slow
def test_no_resume_ignores_the_checkpoint(maps, tmp_path):
    args = ("--preset", "paper", "--max-epochs", "2")
    out = tmp_path / "out.neural"
    kill_after_checkpoint(fit_cmd(maps["long"], out, *args), checkpoint_of(out), out)
    proc, _ = run_fit(fit_cmd(maps["long"], out, *args, "--no-resume"))
    assert proc.returncode == 0, proc.stderr
    assert "resuming" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_time_budget_and_epoch_cap_are_honoured_and_reported(maps, tmp_path):
    out = tmp_path / "budget.neural"
    budget = 2.0
    proc, wall = run_fit(
        fit_cmd(
            maps["long"],
            out,
            "--preset",
            "paper",
            "--time-budget",
            str(budget),
            "--max-epochs",
            "100000",
        )
    )
    assert proc.returncode == 0, proc.stderr
    records = training_header(out)["training"]["regions"]
    assert {r["stop"] for r in records} == {"time_budget"}
    assert "2 on the time budget" in proc.stdout, proc.stdout
    # One epoch of a region may run over the budget; two regions, start-up and saving.
    per_region = [r["seconds"] for r in records]
    assert max(per_region) < budget + 15, per_region
    COUNTS["time_budget_fits"] += 1

    out = tmp_path / "cap.neural"
    proc, _ = run_fit(fit_cmd(maps["small"], out, "--max-epochs", "2"))
    assert proc.returncode == 0, proc.stderr
    records = [r for r in training_header(out)["training"]["regions"] if r["stop"] != "empty"]
    assert records and all(r["epochs"] <= 2 for r in records)
    assert {r["stop"] for r in records} <= {"epoch_cap", "converged"}
    assert "on the epoch cap" in proc.stdout
    COUNTS["epoch_cap_fits"] += 1


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_bad_caps_are_refused(value, maps, tmp_path, capsys):
    from neural_em.cli.main import main

    for option in ("--max-epochs", "--time-budget"):
        with pytest.raises(SystemExit) as info:
            main(["fit", str(maps["small"]), "-o", str(tmp_path / "x.neural"), option, value])
        assert info.value.code == 2
        assert option in capsys.readouterr().err


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.slow
def test_crafted_checkpoints_are_ignored(maps, tmp_path):
    """A pickle, a truncated file, a checkpoint with a wrong structure and one from another
    fit, each sitting at the checkpoint path: the fit ignores it (warning), trains afresh, and
    no code runs."""
    from neural_em.fields.fileformat import write_field_file

    marker = tmp_path / "MARKER"
    args = ("--max-epochs", "2")
    out = tmp_path / "c.neural"
    ckpt = checkpoint_of(out)
    cases = {
        "pickle": pickle.dumps({"done": _Marker(marker)}),
        "truncated": None,
        "wrong_structure": None,
        "other_fit": None,
    }
    # A real checkpoint of another fit (different seed) to truncate and to reuse.
    other = tmp_path / "other.neural"
    kill_after_checkpoint(
        [*fit_cmd(maps["small"], other, *args)[:-2], "--seed", "99"],
        checkpoint_of(other),
        other,
        NEURAL_EM_CHECKPOINT_EVERY_S="0",
    )
    real = checkpoint_of(other).read_bytes()
    cases["truncated"] = real[: len(real) // 2]
    cases["other_fit"] = real
    wrong = tmp_path / "wrong.neural"
    write_field_file(
        wrong,
        {
            "kind": "neural-checkpoint",
            "version": 1,
            "fingerprint": "x",
            "done": [1, 2],
            "in_progress": "no",
        },
        {"w": np.zeros(3, np.float32)},
    )
    cases["wrong_structure"] = wrong.read_bytes()
    for name, content in cases.items():
        ckpt.write_bytes(content)
        proc, _ = run_fit(fit_cmd(maps["small"], out, *args, "--force"))
        assert proc.returncode == 0, f"{name}: {proc.stderr[-1500:]}"
        assert "resuming" not in proc.stderr, name
        assert "ignoring" in proc.stderr, f"{name}: no warning\n{proc.stderr[-1500:]}"
        assert not marker.exists(), f"{name}: checkpoint code ran"
        COUNTS["crafted_checkpoints_ignored"] += 1


@pytest.mark.slow
def test_forged_checkpoint_structure_is_ignored(maps, tmp_path):
    """The fingerprint is a hash anyone can recompute: a checkpoint with the right fingerprint
    but a header of the wrong structure must be ignored like any unreadable checkpoint."""
    from neural_em.fields.fileformat import read_field_file, write_field_file

    args = ("--max-epochs", "2")
    out = tmp_path / "f.neural"
    kill_after_checkpoint(
        fit_cmd(maps["small"], out, *args),
        checkpoint_of(out),
        out,
        NEURAL_EM_CHECKPOINT_EVERY_S="0",
    )
    header, tensors = read_field_file(checkpoint_of(out))
    for field_name, bad in (
        ("done", [1, 2]),
        ("in_progress", "no"),
        ("done", {"0": 5}),
        ("in_progress", {"zero": {}}),
    ):
        write_field_file(checkpoint_of(out), {**header, field_name: bad}, tensors, overwrite=True)
        proc, _ = run_fit(fit_cmd(maps["small"], out, *args, "--force"))
        assert proc.returncode == 0, f"{field_name}={bad!r}: {proc.stderr[-800:]}"
        assert "ignoring" in proc.stderr
        COUNTS["crafted_checkpoints_ignored"] += 1
        out.unlink()


@pytest.mark.slow
def test_two_cpu_fits_give_identical_files(maps, tmp_path):
    args = ("--max-epochs", "3")
    a, b = tmp_path / "a.neural", tmp_path / "b.neural"
    for out in (a, b):
        proc, _ = run_fit(fit_cmd(maps["small"], out, *args))
        assert proc.returncode == 0, proc.stderr
    from neural_em.fields.fileformat import read_field_file

    (ha, ta), (hb, tb) = read_field_file(a), read_field_file(b)
    assert sorted(ta) == sorted(tb)
    for key in ta:
        assert np.array_equal(ta[key], tb[key]), f"tensor {key} differs"
    COUNTS["identical_weights"] += 1

    def no_times(obj):
        if isinstance(obj, dict):
            return {k: no_times(v) for k, v in obj.items() if "second" not in k}
        if isinstance(obj, list):
            return [no_times(v) for v in obj]
        return obj

    assert no_times(ha) == no_times(hb)
