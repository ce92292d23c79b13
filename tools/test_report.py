"""Print the README's "Test report" section from the reliability tests' counts.

The reliability tests (fuzzed maps, untrusted files, atomic outputs, resumed fits, pipeline
faults) write what they tried to JSON files in ``$NEURAL_EM_TEST_REPORT_DIR`` (default
``benchmarks/out/test_report/``); ``benchmarks/bench_memory.py`` writes the peak memory of the
EMD-11007 graph there too. This script collects them and prints a markdown section.

    python tools/test_report.py                 # read what the last test run left
    python tools/test_report.py --run           # run those tests (and the benchmark) first
    python tools/test_report.py --run --quick   # without the slow tests and the benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_fuzz_maps.py",
    "tests/test_untrusted_files.py",
    "tests/test_atomic_outputs.py",
    "tests/test_resume_cli.py",
    "tests/test_limits.py",
    "tests/test_pipeline_faults.py",
]


def report_dir() -> Path:
    return Path(
        os.environ.get("NEURAL_EM_TEST_REPORT_DIR", REPO / "benchmarks" / "out" / "test_report")
    )


def load(name: str) -> dict[str, Any] | None:
    path = report_dir() / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def run_tests(quick: bool) -> int:
    folder = report_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        if old.name != "memory.json" or not quick:
            old.unlink()
    argv = [sys.executable, "-m", "pytest", "-q", *TESTS]
    if quick:
        argv += ["-m", "not slow"]
    env = {**os.environ, "NEURAL_EM_TEST_REPORT_DIR": str(folder)}
    if quick:  # the tests write their (partial) counts even though slow ones are skipped
        env["NEURAL_EM_TEST_REPORT_PARTIAL"] = "1"
    # Their output goes to stderr: stdout carries only the markdown.
    code = subprocess.call(argv, cwd=REPO, env=env, stdout=sys.stderr)
    if not quick:
        subprocess.call(
            [sys.executable, "benchmarks/bench_memory.py"], cwd=REPO, env=env, stdout=sys.stderr
        )
    return code


def _n(d: dict | None, key: str) -> int:
    return int((d or {}).get(key, 0))


def render() -> str:
    fuzz = load("fuzz_maps")
    untrusted = load("untrusted_files")
    atomic = load("atomic_outputs")
    resume = load("resume")
    faults = load("pipeline_faults")
    memory = load("memory")
    rows: list[tuple[str, str, str]] = []
    if fuzz:
        tried, clean = _n(fuzz, "malformed_runs"), _n(fuzz, "malformed_refused_cleanly")
        rows.append(
            (
                "Malformed maps (hypothesis fuzz: truncation, bad mode, zero/negative dimensions, "
                "10^12-voxel header, NaN/Inf, bad axis order, bad cell, corrupt gzip/bzip2, ...)",
                f"{_n(fuzz, 'malformed_files')} files, {tried} command runs "
                f"({', '.join(fuzz.get('commands', []))})",
                f"{clean} of {tried} refused cleanly (exit 2, one line naming file and problem)",
            )
        )
        rows.append(
            (
                "Odd but valid maps (NaN origin, unknown machine stamp, big-endian, "
                "trailing bytes, gzip/bzip2)",
                f"{_n(fuzz, 'valid_files')} files",
                f"{_n(fuzz, 'valid_files')} read, fitted and resampled to valid MRC",
            )
        )
        rows.append(
            (
                "Constant and all-zero maps; compressed bombs",
                f"{_n(fuzz, 'constant_maps_refused_cleanly')} runs; "
                f"{_n(fuzz, 'compressed_bombs_refused')} runs",
                "refused cleanly (no NaNs); refused without allocating the claimed size",
            )
        )
    if untrusted:
        tried = _n(untrusted, "crafted_code_files")
        rows.append(
            (
                "Crafted code files (pickles creating a marker file, in torch.save zips, tars, "
                "gzip, npy/npz object arrays) as .neural, maps, graphs, models",
                f"{tried} files",
                f"{_n(untrusted, 'crafted_code_files_refused')} of {tried} refused, marker never "
                "created",
            )
        )
        rows.append(
            (
                "Malformed .neural files (truncated/corrupt safetensors, lying tensor records, "
                "wrong types/shapes, NaN weights, unknown versions)",
                f"{_n(untrusted, 'malformed_field_files')} files, "
                f"{_n(untrusted, 'header_mutations')} header mutations",
                f"all refused; {_n(untrusted, 'header_mutations_refused')} header mutations "
                f"refused, {_n(untrusted, 'header_mutations_harmless')} harmless (field still "
                "answers finite values)",
            )
        )
        if _n(untrusted, "malformed_graph_files") or _n(untrusted, "malformed_model_files"):
            rows.append(
                (
                    "Malformed graph JSON/npz and models",
                    f"{_n(untrusted, 'malformed_graph_files')} graph files, "
                    f"{_n(untrusted, 'malformed_model_files')} models",
                    "all refused with one line",
                )
            )
    if atomic:
        rows.append(
            (
                "Commands SIGKILLed mid-run (resample, fit --field spline, query, graph)",
                f"{_n(atomic, 'kills')} kills in "
                f"{sum(v for k, v in atomic.items() if k.endswith('_runs'))} runs",
                f"{_n(atomic, 'kills_output_corrupt')} torn outputs "
                f"({_n(atomic, 'kills_output_absent')} absent, "
                f"{_n(atomic, 'kills_output_complete')} complete)",
            )
        )
    if resume:
        rows.append(
            (
                "Neural fits SIGKILLed after a checkpoint, rerun with the same arguments",
                f"{_n(resume, 'kills')} kills",
                f"{_n(resume, 'resumed_runs_survived')} resumed runs equal to uninterrupted fits; "
                f"{_n(resume, 'crafted_checkpoints_ignored')} crafted checkpoints ignored; "
                f"time budget {_n(resume, 'time_budget_fits')} / epoch cap "
                f"{_n(resume, 'epoch_cap_fits')} fits honoured and reported",
            )
        )
    if faults:
        workflow = _n(faults, "workflow_completed_after_kills")
        rows.append(
            (
                "Demo workflow (config/smoke.yaml): snakemake and one job SIGKILLed, rerun",
                f"{_n(faults, 'snakemake_kills')} + {_n(faults, 'job_kills')} kills",
                (
                    f"completed {workflow}x; {_n(faults, 'finished_outputs_recomputed')} of "
                    f"{_n(faults, 'finished_outputs_watched')} finished outputs recomputed; no "
                    "corrupt output"
                    if workflow
                    else "not run (skipped)"
                ),
            )
        )
        rows.append(
            (
                "Downloads cut half-way / killed mid-transfer",
                f"{_n(faults, 'downloads_cut_refused')} cut, "
                f"{_n(faults, 'downloads_killed')} killed",
                "never left under the final name",
            )
        )
    lines = ["## Test report", ""]
    if not rows and not memory:
        lines.append(
            f"No counts found in {report_dir()}: run `python tools/test_report.py "
            "--run` (or the reliability tests) first."
        )
        return "\n".join(lines) + "\n"
    lines += [
        "Produced by `python tools/test_report.py --run` (the reliability tests and "
        "`benchmarks/bench_memory.py`); details and commands in docs/reliability.md.",
        "",
        "| What | Tried | Result |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if memory:
        g = memory.get("graph", {})
        lines += [
            "",
            f"Peak memory of `{g.get('command', 'neural-em graph')}` on EMD-11007 "
            f"(240³, unmasked): **{g.get('peak_rss_gb', '?')} GB** (target < "
            f"{memory.get('target_gb', 4)} GB), {g.get('wall_s', '?')} s wall, "
            f"{g.get('nodes', '?')} nodes (peak RSS of the child process; "
            f"{memory.get('machine', {}).get('note', '')}).",
        ]
    else:
        lines += [
            "",
            "Peak memory of the EMD-11007 graph: not measured "
            "(run `python benchmarks/bench_memory.py`).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="store_true", help="run the tests (and benchmark) first")
    parser.add_argument(
        "--quick", action="store_true", help="with --run: skip slow tests and the memory benchmark"
    )
    args = parser.parse_args(argv)
    code = run_tests(args.quick) if args.run else 0
    sys.stdout.write(render())
    return code


if __name__ == "__main__":
    sys.exit(main())
