"""The workflow passes ``snakemake --lint``, and the config's defaults live in the schema only.

Lint runs on the demo configuration with Chimera and DeepTracer switched on, so that the rules
defined only then (chimera_maps, deeptracer, evaluate_deeptracer) are linted too; it parses the
workflow without running a job (a few seconds).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
SCHEMA = REPO / "config" / "schema.yaml"

pytestmark = pytest.mark.skipif(
    shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
    reason="snakemake is not installed",
)


def snakemake_exe() -> str:
    local = Path(sys.executable).parent / "snakemake"
    return str(local) if local.exists() else "snakemake"


def test_snakemake_lint_finds_nothing(tmp_path):
    overlay = tmp_path / "every_rule.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "interpolation": {"chimera": "/nonexistent/chimera"},
                "deeptracer": {"command": "deeptracer {map} {fasta} {output}"},
            }
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("CHIMERA_PATH", None)
    proc = subprocess.run(
        [
            snakemake_exe(),
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(REPO / "config" / "config.yaml"),
            str(overlay),
            "--lint",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    # every rule was there to lint
    assert "Lints for" not in out, out[-6000:]
    assert proc.returncode == 0, out[-6000:]


# ---------------------------------------------------------------------- defaults
#: Names the rules give to blocks of the validated config (``FIT = section("fit")``, ...).
ALIASES = {
    "FIT": ("fit",),
    "GRAPH_CFG": ("graph",),
    "INTERP_CFG": ("interpolation",),
    "ds": ("dataset",),
    "backbone": ("graph", "backbone"),
    "download": ("download",),
}
KEY = r"""\[["']([A-Za-z0-9_]+)["']\]"""


def indexed_keys() -> set[tuple[str, ...]]:
    """Every config key path the rules (and the download script) read by indexing."""
    paths: set[tuple[str, ...]] = set()
    texts = [p.read_text(encoding="utf-8") for p in RULES]
    texts.append((REPO / "scripts" / "download.py").read_text(encoding="utf-8"))
    for text in texts:
        for name, key in re.findall(r"""section\(["']([a-z_]+)["']\)""" + KEY, text):
            paths.add((name, key))
        for key in re.findall(r"\bconfig" + KEY, text):
            paths.add((key,))
        for alias, prefix in ALIASES.items():
            for key in re.findall(rf"\b{alias}" + KEY, text):
                paths.add((*prefix, key))
    for section in ("fit", "graph", "interpolation", "deeptracer"):
        for key in ("threads", "mem_mb", "runtime"):
            paths.add((section, "resources", key))
            paths.add(("download_resources", key))
    return paths


def test_the_schema_fills_every_key_the_rules_read():
    """A minimal configuration, validated, holds every key the rules index: the defaults are
    the schema's (rules never repeat them with ``.get(key, default)``)."""
    from snakemake.utils import validate

    paths = indexed_keys()
    assert ("fit", "max_epochs") in paths and ("graph", "backbone", "prune_A") in paths
    config = {"dataset": {"source": "entries"}, "fit": {}, "graph": {}, "interpolation": {}}
    validate(config, str(SCHEMA))
    missing = []
    for path in sorted(paths):
        node = config
        for key in path:
            if not isinstance(node, dict) or key not in node:
                missing.append(".".join(path))
                break
            node = node[key]
    assert missing == []
    # the resources of each rule group keep their own defaults, also beside a key that is given
    partial = copy.deepcopy(
        {
            "dataset": {"source": "entries"},
            "graph": {},
            "fit": {"resources": {"mem_mb": 100}},
            "interpolation": {},
        }
    )
    validate(partial, str(SCHEMA))
    assert partial["fit"]["resources"] == {"mem_mb": 100, "runtime": 60, "threads": 2}
    assert partial["interpolation"]["resources"] == {"mem_mb": 6000, "runtime": 60, "threads": 2}


def test_rules_do_not_repeat_defaults():
    pattern = re.compile(
        r"""(?:config|section\([^)]*\)|\b(?:FIT|GRAPH_CFG|INTERP_CFG|ds|res|"""
        r"""download))\.get\("""
    )
    found = [
        f"{p.name}: {line.strip()}"
        for p in [*RULES, REPO / "Snakefile", *sorted((REPO / "scripts").glob("*.py"))]
        for line in p.read_text(encoding="utf-8").splitlines()
        if pattern.search(line)
    ]
    # the entry list has no default: its absence is reported by config_entries, naming it
    assert found == ['common.smk: return config_entries(config.get("entries"))']
