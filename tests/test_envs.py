"""The conda environments in envs/ agree with pyproject.toml's dependencies.

Every dependency of the package (and of its ``workflow`` extra) appears in the environments
(conda-forge names: torch is ``pytorch``, matplotlib may be ``matplotlib-base``) with version
bounds compatible with pyproject's: every version an environment allows is allowed by
pyproject, and some version satisfies both. Every rule's ``conda:`` names an existing file.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
#: pyproject name -> conda-forge names that provide it.
CONDA_NAMES = {
    "torch": ("pytorch", "pytorch-gpu", "pytorch-cpu"),
    "matplotlib": ("matplotlib", "matplotlib-base"),
}
#: The package's own dependencies must be in every rule environment (the package is
#: installed there with --no-deps); the workflow extra's somewhere.
RULE_ENVS = ("download", "fit", "graph", "interpolation", "collect")


def pyproject_requirements() -> tuple[list[Requirement], list[Requirement]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    core = [Requirement(r) for r in project["dependencies"]]
    workflow = [
        Requirement(r) for r in project.get("optional-dependencies", {}).get("workflow", [])
    ]
    return core, workflow


def conda_specs(path: Path) -> dict[str, SpecifierSet]:
    """name -> version specifier of a conda environment file's dependencies."""
    env = yaml.safe_load(path.read_text())
    out: dict[str, SpecifierSet] = {}
    for dep in env.get("dependencies", []):
        if not isinstance(dep, str):
            continue  # the pip: section
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", dep.strip())
        assert m, f"{path.name}: cannot read dependency {dep!r}"
        name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
        out[name] = SpecifierSet(spec) if spec else SpecifierSet()
    return out


def _probe_versions(*specs: SpecifierSet) -> list[Version]:
    """Versions on and around every bound the specifiers mention."""
    out = {Version("0.0.1"), Version("999")}
    for spec in specs:
        for s in spec:
            v = Version(s.version.replace(".*", ""))
            rel = list(v.release) + [0] * (3 - len(v.release))
            major, minor, micro = rel[:3]
            out.update(
                {
                    v,
                    Version(f"{major}.{minor}.{micro + 1}"),
                    Version(f"{major}.{minor + 1}"),
                    Version(f"{major + 1}.0"),
                }
            )
            if micro:
                out.add(Version(f"{major}.{minor}.{micro - 1}"))
            if minor:
                out.add(Version(f"{major}.{minor - 1}.99"))
            if major:
                out.add(Version(f"{major - 1}.99"))
    return sorted(out)


def compatible(env_spec: SpecifierSet, project_spec: SpecifierSet) -> tuple[bool, str]:
    probes = _probe_versions(env_spec, project_spec)
    too_wide = [str(v) for v in probes if v in env_spec and v not in project_spec]
    if too_wide:
        return False, f"the environment allows {', '.join(too_wide[:3])} that pyproject forbids"
    if not any(v in env_spec and v in project_spec for v in probes):
        return False, "no version satisfies both"
    return True, ""


def find(specs: dict[str, SpecifierSet], name: str) -> tuple[str, SpecifierSet] | None:
    for candidate in (name.lower(), *CONDA_NAMES.get(name.lower(), ())):
        if candidate in specs:
            return candidate, specs[candidate]
    return None


def all_env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def test_env_files_exist():
    names = {p.stem for p in all_env_files()}
    assert set(RULE_ENVS) <= names, names
    assert "snakemake" in names


@pytest.mark.parametrize("env", RULE_ENVS)
def test_core_dependencies_in_every_rule_env(env):
    core, _ = pyproject_requirements()
    specs = conda_specs(ENVS / f"{env}.yaml")
    problems = []
    for req in core:
        found = find(specs, req.name)
        if found is None:
            problems.append(f"{req.name} missing")
            continue
        ok, why = compatible(found[1], req.specifier)
        if not ok:
            problems.append(f"{found[0]} {found[1]} vs pyproject {req}: {why}")
    assert not problems, f"envs/{env}.yaml: " + "; ".join(problems)


def test_workflow_extra_in_some_env():
    _, workflow = pyproject_requirements()
    envs = {p.stem: conda_specs(p) for p in all_env_files()}
    problems = []
    for req in workflow:
        hits = [(env, find(specs, req.name)) for env, specs in envs.items()]
        hits = [(env, f) for env, f in hits if f is not None]
        if not hits:
            problems.append(f"{req.name} in no environment")
        for env, (name, spec) in hits:
            ok, why = compatible(spec, req.specifier)
            if not ok:
                problems.append(f"envs/{env}.yaml {name} {spec} vs pyproject {req}: {why}")
    assert not problems, "; ".join(problems)


def test_python_version_matches():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project_spec = SpecifierSet(data["project"]["requires-python"])
    for path in all_env_files():
        specs = conda_specs(path)
        assert "python" in specs, f"{path.name} pins no python"
        ok, why = compatible(specs["python"], project_spec)
        assert ok, f"{path.name}: python {specs['python']}: {why}"


def test_no_dependency_outside_pyproject():
    """An environment needs nothing pyproject does not declare (the env is not a second,
    drifting dependency list); build tools and python excepted."""
    core, workflow = pyproject_requirements()
    declared = {r.name.lower() for r in core + workflow}
    for names in CONDA_NAMES.values():
        declared.update(names)
    declared.update({"python", "pip", "setuptools", "wheel"})
    declared.update(n for r in core + workflow for n in CONDA_NAMES.get(r.name.lower(), ()))
    for path in all_env_files():
        extra = set(conda_specs(path)) - declared
        assert not extra, f"{path.name}: {sorted(extra)} not in pyproject.toml"


def test_compatibility_check_can_fail():
    assert not compatible(SpecifierSet(">=2.1"), SpecifierSet(">=2.1,<2.14"))[0]
    assert not compatible(SpecifierSet("<1.0"), SpecifierSet(">=1.24"))[0]
    assert compatible(SpecifierSet(">=2.1,<2.14"), SpecifierSet(">=2.1,<2.14"))[0]
    assert compatible(SpecifierSet(">=1.26"), SpecifierSet(">=1.24"))[0]


def test_rules_name_existing_envs():
    rules = list((REPO / "workflow" / "rules").glob("*.smk"))
    assert rules
    named = set()
    for smk in rules:
        for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            path = (smk.parent / rel).resolve()
            assert path.is_file(), f"{smk.name}: conda env {rel} does not exist"
            named.add(path.stem)
    assert named == set(RULE_ENVS)
    for env in RULE_ENVS:  # the package itself is installed by a post-deploy script
        assert (ENVS / f"{env}.post-deploy.sh").is_file()
