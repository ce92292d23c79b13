"""The package's imports form layers and no cycles, read from the source with ``ast``.

Every import counts, also those inside functions (they are how cycles hide: the import runs
later, but the dependency is the same). A module may import modules of its own layer or of
lower layers only; between modules there is no cycle. A new module must be given a layer here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = "neural_em"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, lowest first: (name, module prefixes). A module belongs to the layer of its
#: longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "map I/O and structures",
        (
            "neural_em._version",
            "neural_em.errors",
            "neural_em.atomic",
            "neural_em.voxelmap",
            "neural_em.mrcread",
            "neural_em.models",
            "neural_em.simulate",
        ),
    ),
    ("fields", ("neural_em.fields",)),
    ("graphs and evaluation", ("neural_em.graph",)),
    ("pipeline", ("neural_em.pipeline", "neural_em.view")),
    # the package root re-exports the public API of every layer: nothing inside may import it
    ("cli", ("neural_em.cli", "neural_em")),
]

#: Import cycles known today and being removed. DELETE an entry when its cycle is broken
#: (test_known_cycles_still_exist fails until then, like a strict xfail).
KNOWN_CYCLES: set[tuple[str, ...]] = set()

#: Most lines a module of the package may have: past that, it holds several concerns.
MAX_MODULE_LINES = 600
#: Modules over the limit today and being split. DELETE an entry once its module is short.
KNOWN_LONG_MODULES: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (functions included).

    ``from a.b import c`` imports the module ``a.b.c`` where it exists, else ``a.b``; importing
    a submodule is not counted as importing its parent package (the package's ``__init__``
    runs too, but it is the package's own business). ``importlib.import_module(f"a.b.{x}")``
    imports every module under ``a.b.`` (the command line loads its commands so).
    """
    known = set(known)
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def nearest(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if (
            isinstance(node, ast.Call)
            and node.args
            and (
                getattr(node.func, "attr", None) == "import_module"
                or getattr(node.func, "id", None) == "import_module"
            )
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                targets = [arg.value]
            elif isinstance(arg, ast.JoinedStr):
                prefix = ""
                for part in arg.values:
                    if not isinstance(part, ast.Constant):
                        break
                    prefix += str(part.value)
                targets = [m for m in known if m.startswith(prefix)] if "." in prefix else []
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in known else base)
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found = nearest(target)
                if found is not None and found != name:
                    out.add(found)
    return out


def import_graph() -> nx.DiGraph:
    modules = package_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, target) for target in imported_modules(name, path, modules))
    return graph


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def upward_imports(
    graph: nx.DiGraph, layers: list[tuple[str, tuple[str, ...]]] = LAYERS
) -> list[str]:
    out = []
    for a, b in sorted(graph.edges):
        la, lb = layer_of(a, layers), layer_of(b, layers)
        if la is not None and lb is not None and lb > la:
            out.append(f"{a} ({layers[la][0]}) imports {b} ({layers[lb][0]})")
    return out


def import_cycles(
    graph: nx.DiGraph, allowed: Iterable[tuple[str, ...]] = ()
) -> list[tuple[str, ...]]:
    """Groups of modules that import each other (strongly connected), minus ``allowed``."""
    allowed_sets = {frozenset(c) for c in allowed}
    out = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1 and frozenset(component) not in allowed_sets:
            out.append(tuple(sorted(component)))
    return sorted(out)


# ---------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def test_every_module_has_a_layer(graph):
    assert [m for m in sorted(graph) if layer_of(m) is None] == []


def test_no_module_imports_a_higher_layer(graph):
    assert upward_imports(graph) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph, KNOWN_CYCLES) == []


def test_known_cycles_still_exist(graph):
    """Fails once a known cycle is broken: then delete its KNOWN_CYCLES entry."""
    cycles = {frozenset(c) for c in import_cycles(graph)}
    assert [c for c in sorted(KNOWN_CYCLES) if frozenset(c) not in cycles] == []


def test_no_module_is_over_the_line_limit():
    lengths = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in package_modules().items()
    }
    assert {
        n: k for n, k in lengths.items() if k > MAX_MODULE_LINES and n not in KNOWN_LONG_MODULES
    } == {}


# ---------------------------------------------------------------------- the checks themselves
def _graph(edges: Mapping[str, Iterable[str]]) -> nx.DiGraph:
    g = nx.DiGraph()
    for a, bs in edges.items():
        g.add_node(a)
        g.add_edges_from((a, b) for b in bs)
    return g


def test_the_checks_catch_cycles_and_upward_imports(tmp_path):
    # the cli/main <-> cli/common cycle as it was: main defined the help formatter, common
    # imported it at the top, and main imported the command modules that import common
    g = _graph(
        {
            "neural_em.cli.main": ["neural_em.cli.fit"],
            "neural_em.cli.fit": ["neural_em.cli.common"],
            "neural_em.cli.common": ["neural_em.cli.main"],
            "neural_em.voxelmap": ["neural_em.fields.base"],
            "neural_em.fields.base": [],
        }
    )
    assert import_cycles(g) == [("neural_em.cli.common", "neural_em.cli.fit", "neural_em.cli.main")]
    assert upward_imports(g) == [
        "neural_em.voxelmap (map I/O and structures) imports neural_em.fields.base (fields)"
    ]
    assert layer_of("neural_em") == len(LAYERS) - 1
    assert layer_of("neural_em.fields.neural") == 1


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
    pkg = tmp_path / PACKAGE / "graph"
    pkg.mkdir(parents=True)
    src = pkg / "export.py"
    src.write_text(
        "from . import density_graph as dg\n"
        "def load():\n"
        "    from neural_em.fields.neural import NeuralDensityMap\n"
        "    from neural_em.graph.density_graph import DensityGraph\n"
        "    import neural_em.pipeline.collect\n"
        "    importlib.import_module(f'neural_em.cli.{name}')\n"
    )
    known = {
        "neural_em.graph.export",
        "neural_em.graph.density_graph",
        "neural_em.fields.neural",
        "neural_em.pipeline",
        "neural_em.pipeline.collect",
        "neural_em.graph",
        "neural_em.cli.fit",
        "neural_em.cli.common",
    }
    assert imported_modules("neural_em.graph.export", src, known) == {
        "neural_em.graph.density_graph",
        "neural_em.fields.neural",
        "neural_em.pipeline.collect",
        "neural_em.cli.fit",
        "neural_em.cli.common",
    }
