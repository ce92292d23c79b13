"""The same scene in PyMOL: a ``.pml`` beside the ``.cxc``, opening the same files.

PyMOL resolves paths against its current directory, not the script's, so the script's first
line (Python, which a ``.pml`` may hold after ``/``) changes into the script's own folder
(PyMOL keeps the running script's path in ``cmd._pymol.__script__``) and its last line changes
back. Nodes get the page's colours (a selection per colour: chain and residues of the graph's
mmCIF); consecutive nodes of a backbone graph are drawn as PyMOL's C-alpha ribbon, other edges
come from the mmCIF's ``struct_conn`` bonds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from neural_em.atomic import atomic_write_text
from neural_em.view.chimerax import data_folder, graph_copy_name, model_suffix
from neural_em.view.scene import (
    MAP_COLOUR,
    MODEL_COLOUR,
    GraphLayer,
    Scene,
    default_visible,
    runs_text,
)


def _name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_") or "graph"


def _hex(colour: str) -> str:
    return "0x" + colour.lstrip("#").lower()


def colour_commands(layer: GraphLayer, obj: str) -> list[str]:
    """``color`` commands giving each node (atom) of the graph object its page colour."""
    by_colour = layer.residues_by_colour()
    out = []
    for colour in sorted(by_colour):
        parts = [f"(chain {c} and resi {runs_text(r, '+')})" for c, r in by_colour[colour].items()]
        for k in range(0, len(parts), 40):
            out.append(f"color {_hex(colour)}, {obj} and ({' or '.join(parts[k : k + 40])})")
    return out


def _rel(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def write_pymol(
    scene: Scene, path: str | os.PathLike, *, cxc: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the ``.pml`` opening the files :func:`~neural_em.view.chimerax.write_chimerax`
    wrote for ``cxc`` (call that first)."""
    path = Path(path)
    here = path.resolve().parent
    folder = data_folder(cxc)
    lines = [
        f"# neural-em view of {scene.title} in PyMOL: pymol {path.name} (or @{path.name}).",
        "# The next line changes into this file's folder (the paths below are relative to it);",
        "# the last one changes back.",
        "/import os as _ne_os; _ne_cwd = _ne_os.getcwd(); "
        "cmd.cd(_ne_os.path.dirname(_ne_os.path.abspath(cmd._pymol.__script__)))",
        f"load {_rel(folder / 'map.mrc', here)}, map",
        f"isomesh map_mesh, map, {scene.page_map.contour:.6g}",
        f"color {_hex(MAP_COLOUR)}, map_mesh",
    ]
    if scene.model_source is not None:
        model = folder / f"model{model_suffix(scene.model_source)}"
        lines += [
            f"load {_rel(model, here)}, atomic_model",
            "hide everything, atomic_model",
            "show cartoon, atomic_model",
            f"color {_hex(MODEL_COLOUR)}, atomic_model",
        ]
    visible = default_visible(scene)
    for k, layer in enumerate(scene.graphs):
        if layer.empty:
            lines.append(f"# graph {layer.label}: empty (no nodes), not loaded")
            continue
        obj = _name(layer.label)
        cif = layer.mmcif or folder / graph_copy_name(layer)
        radius = 0.7 if layer.method == "backbone" else 0.5
        lines += [
            f"load {_rel(cif, here)}, {obj}",
            f"hide everything, {obj}",
            f"show spheres, {obj}",
            f"show sticks, {obj}",
            f"set sphere_scale, {radius / 1.7:.3g}, {obj}",
            f"set stick_radius, 0.2, {obj}",
            *colour_commands(layer, obj),
        ]
        if layer.method == "backbone":
            lines.append(f"show ribbon, {obj}")
        if k not in visible:
            lines.append(f"disable {obj}")
    lines += ["zoom map_mesh", "/cmd.cd(_ne_cwd)"]
    return atomic_write_text(path, "\n".join(lines) + "\n", overwrite=overwrite)
