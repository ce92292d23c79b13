"""GPU slot allocator: more concurrent jobs (processes) than slots never share a device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neural_em.pipeline.gpu_slots import SLOT_ENV, default_runtime_dir, gpu_slot, visible_devices

JOB = textwrap.dedent("""
    import json, os, sys, time
    from neural_em.pipeline.gpu_slots import gpu_slot
    log, runtime, n_slots, hold_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with gpu_slot(n_slots=n_slots, runtime_dir=runtime, check_cuda=False, poll_s=0.02) as device:
        start = time.time()
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        slot = os.environ["NEURAL_EM_GPU_SLOT"]
        time.sleep(hold_s)
        end = time.time()
    # each job appends one line (O_APPEND writes of < PIPE_BUF bytes do not interleave)
    with open(log, "a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "device": device, "visible": visible,
                                 "slot": slot, "start": start, "end": end}) + "\\n")
""")


def _run_jobs(
    tmp_path: Path, n_jobs: int, n_slots: int, hold_s: float, env: dict[str, str] | None = None
) -> list[dict]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    log = tmp_path / "log.jsonl"
    runtime = tmp_path / "runtime"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(log), str(runtime), str(n_slots), str(hold_s)],
            env={**os.environ, **(env or {})},
        )
        for _ in range(n_jobs)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    return [json.loads(line) for line in log.read_text().splitlines()]


def _overlaps(records: list[dict]) -> list[tuple[int, int]]:
    bad = []
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["visible"] == b["visible"] and a["start"] < b["end"] and b["start"] < a["end"]:
                bad.append((a["pid"], b["pid"]))
    return bad


def test_more_jobs_than_slots_never_share_a_device(tmp_path):
    n_jobs, n_slots, hold_s = 8, 3, 0.4
    t0 = time.time()
    records = _run_jobs(tmp_path, n_jobs, n_slots, hold_s)
    assert len(records) == n_jobs  # every job ran
    assert {r["device"] for r in records} == {"cuda"}
    assert {r["visible"] for r in records} <= {"0", "1", "2"}
    assert all(r["visible"] == r["slot"] for r in records)
    assert _overlaps(records) == []  # no device ever held twice at once
    # and the slots were really used in parallel: more than one job at some moment
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running, peak = 0, 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert 2 <= peak <= n_slots
    assert time.time() - t0 < 60


def test_inherited_visible_devices_are_the_slots(tmp_path):
    records = _run_jobs(tmp_path, 4, 2, 0.3, env={"CUDA_VISIBLE_DEVICES": "5,7"})
    assert len(records) == 4
    assert {r["visible"] for r in records} <= {"5", "7"}
    assert _overlaps(records) == []


def test_lock_of_a_killed_job_is_released(tmp_path):
    runtime = tmp_path / "runtime"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from neural_em.pipeline.gpu_slots import gpu_slot
        with gpu_slot(n_slots=1, runtime_dir={str(runtime)!r}, check_cuda=False):
            print("held", flush=True)
            time.sleep(60)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="no free GPU slot"):
            with gpu_slot(n_slots=1, runtime_dir=runtime, timeout_s=0.3, check_cuda=False):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        t0 = time.monotonic()
        with gpu_slot(n_slots=1, runtime_dir=runtime, timeout_s=5, check_cuda=False) as device:
            assert device == "cuda" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert time.monotonic() - t0 < 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_cpu_fallback_and_environment_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.delenv(SLOT_ENV, raising=False)
    with gpu_slot(n_slots=0, runtime_dir=tmp_path) as device:
        assert device == "cpu"
    # a slot whose torch has no CUDA (this CPU build) falls back to the CPU too
    with gpu_slot(n_slots=1, runtime_dir=tmp_path) as device:
        import torch

        assert device == ("cuda" if torch.cuda.is_available() else "cpu")
        assert os.environ[SLOT_ENV] == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and SLOT_ENV not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("NEURAL_EM_GPUS", raising=False)
    assert visible_devices() == []
    monkeypatch.setenv("NEURAL_EM_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_devices() == ["0", "1"]
    monkeypatch.setenv("NEURAL_EM_GPUS", "two")
    with pytest.raises(ValueError, match="NEURAL_EM_GPUS"):
        visible_devices()


def test_runtime_dir_is_per_job_under_slurm(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURAL_EM_GPU_RUNTIME", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert default_runtime_dir() == tmp_path
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert default_runtime_dir() == tmp_path / "slurm-42"
