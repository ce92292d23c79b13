"""The slurm profile for real: a single-node SLURM on 127.0.0.1 (tools/slurm_local.sh) runs a
small DAG through ``snakemake --profile config/profiles/slurm``; sacct must show every job
COMPLETED, the GPU jobs with a (fake) GPU each, and the GPU jobs must have seen it.

Needs root and Debian's slurm-wlm, slurmdbd, mariadb-server and munge
(tools/install_system_deps.sh). Skipped without them, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "slurm_local.sh"
PROFILE = REPO / "config" / "profiles" / "slurm"
TOOLS = (
    "munged",
    "mungekey",
    "mariadbd",
    "mariadb-install-db",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
    "srun",
)
ACCOUNT = "nemtest"
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")

SNAKEFILE = textwrap.dedent("""
    SAMPLES = ["a", "b"]

    rule all:
        input:
            expand("gpu_{sample}.txt", sample=SAMPLES),

    rule prepare:
        output:
            "cpu.txt",
        threads: 1
        resources:
            mem_mb=200,
            runtime=5,
        log:
            "logs/prepare.log",
        shell:
            "echo slurm_job=$SLURM_JOB_ID > {output} 2> {log}"

    # named like the workflow's GPU rule, so the profile's set-resources (gres=gpu:1) apply
    rule fit_neural:
        input:
            "cpu.txt",
        output:
            "gpu_{sample}.txt",
        threads: 1
        resources:
            mem_mb=200,
            runtime=5,
            gpu=1,
        log:
            "logs/fit_{sample}.log",
        script:
            "record_gpu.py"
""")

RECORD_GPU = textwrap.dedent("""
    import json, os
    from neural_em.pipeline.gpu_slots import gpu_slot

    slurm_cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    with gpu_slot(check_cuda=False) as device:
        record = {"slurm_job": os.environ.get("SLURM_JOB_ID"), "slurm_cvd": slurm_cvd,
                  "slot_cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": device}
    with open(snakemake.output[0], "w") as handle:
        json.dump(record, handle)
""")


def _require_cluster_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    problem = None
    if missing:
        problem = (
            f"SLURM test needs {', '.join(missing)} (install with tools/install_system_deps.sh)"
        )
    elif os.geteuid() != 0:
        problem = "SLURM test needs root (the local cluster's daemons run as root)"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}; in CI this test must run")
        pytest.skip(problem)


def _free_port_base(count: int = 4) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        try:
            sockets = []
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no 4 consecutive free TCP ports on 127.0.0.1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_cluster_tools()
    state = tmp_path_factory.mktemp("slurm")
    conf = state / "etc" / "slurm.conf"
    if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
        # jobs' nested srun reads the default config (the jobstep plugin drops SLURM_CONF)
        message = (
            f"{DEFAULT_CONF} belongs to another cluster (stop it with "
            "tools/slurm_local.sh stop, or remove the file)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = {
        **os.environ,
        "NEURAL_EM_SLURM_DIR": str(state),
        "NEURAL_EM_SLURM_PORT_BASE": str(_free_port_base()),
        "NEURAL_EM_SLURM_ACCOUNT": ACCOUNT,
        "NEURAL_EM_SLURM_CLUSTER": "nemtest",
        "SLURM_CONF": str(conf),
        # the jobs' GPU slot locks (sbatch --export=ALL passes this on)
        "NEURAL_EM_GPU_RUNTIME": str(state / "gpu-slots"),
    }
    try:
        start = subprocess.run(
            ["bash", str(SCRIPT), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            stdin=subprocess.DEVNULL,
        )
        assert start.returncode == 0, f"slurm_local.sh start failed:\n{start.stderr[-3000:]}"
        yield env
    finally:
        stop = subprocess.run(
            ["bash", str(SCRIPT), "stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        status = subprocess.run(
            ["bash", str(SCRIPT), "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert stop.returncode == 0, stop.stderr
        assert status.returncode != 0 and "running" not in status.stdout, status.stdout
        assert not DEFAULT_CONF.is_symlink(), "stop left the /etc/slurm link behind"
        shutil.rmtree(state, ignore_errors=True)  # the MariaDB files: ~100 MB


def _sacct(env: dict[str, str]) -> list[dict[str, str]]:
    fields = ["JobID", "State", "AllocTRES", "Comment", "Account", "ExitCode"]
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-a", "-o", ",".join(fields)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    return [
        dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()
    ]


def test_profile_runs_a_gpu_dag_on_slurm(cluster, tmp_path):
    workdir = tmp_path / "wf"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE)
    (workdir / "record_gpu.py").write_text(RECORD_GPU)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(PROFILE),
        "--snakefile",
        str(workdir / "Snakefile"),
        "--directory",
        str(workdir),
        "--jobs",
        "4",
        "--latency-wait",
        "5",
        "--seconds-between-status-checks",
        "2",
        "--retries",
        "0",
    ]
    try:
        run = subprocess.run(
            cmd, env=cluster, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"snakemake on SLURM did not finish in 240 s:\n{str(exc.stderr)[-3000:]}")
    assert run.returncode == 0, f"snakemake failed:\n{run.stderr[-4000:]}"

    jobs = _sacct(cluster)
    by_rule = {job["Comment"].strip(): job for job in jobs}
    assert sorted(by_rule) == [
        "rule_fit_neural_wildcards_a",
        "rule_fit_neural_wildcards_b",
        "rule_prepare",
    ], jobs
    for job in jobs:
        assert job["State"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Account"] == ACCOUNT, job  # slurm_account from the profile's default
    assert "gres/gpu" not in by_rule["rule_prepare"]["AllocTRES"]
    for sample in "ab":
        job = by_rule[f"rule_fit_neural_wildcards_{sample}"]
        assert "gres/gpu=1" in job["AllocTRES"], job
        record = json.loads((workdir / f"gpu_{sample}.txt").read_text())
        assert record["slurm_job"] == job["JobID"]
        assert record["slurm_cvd"] in {"0", "1"}, record  # SLURM set a fake GPU
        assert record["slot_cvd"] == record["slurm_cvd"]  # the allocator kept to it
        assert record["device"] == "cuda"
    # both requests reached SLURM: --gpus=1 (from gpu=1) and --gres=gpu:1 (set-resources)
    show = subprocess.run(
        ["scontrol", "show", "job", by_rule["rule_fit_neural_wildcards_a"]["JobID"]],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    ).stdout
    assert "TresPerNode=gres:gpu:1" in show and "TresPerJob=gres:gpu:1" in show, show
