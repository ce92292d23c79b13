"""The same scene in ChimeraX: a command file (``.cxc``) and the data it opens.

ChimeraX runs a command file with the current directory set to the file's folder (its
``open_command_script`` changes into it and back), so every path in the file is written
relative to that folder and the results can be moved or copied as a whole. ChimeraX reads
neither gzip-compressed maps nor, reliably, compressed mmCIF, so the map (cropped at the
contour, full resolution up to :data:`~neural_em.view.scene.MAX_CXC_VOXELS`) and the model are
written uncompressed into a folder beside the ``.cxc`` (``emd_3488.cxc`` -> ``emd_3488/``).
The graphs open from their own mmCIF files (the pipeline writes one beside each graph), or
from a copy written into that folder where a graph has none; their nodes get the page's
colours residue by residue (node ``k`` of a graph is residue ``r`` of chain ``c`` of its
mmCIF, :func:`neural_em.graph.mmcif.mmcif_layout`).
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
from pathlib import Path

from neural_em.atomic import atomic_write_bytes, atomic_write_text
from neural_em.graph.density_graph import DensityGraph
from neural_em.view.scene import (
    MAP_COLOUR,
    MODEL_COLOUR,
    GraphLayer,
    Scene,
    default_visible,
    runs_text,
)
from neural_em.voxelmap import write_map

#: Chain parts per ``color`` command (keeps lines short).
PARTS_PER_COMMAND = 40


def data_folder(cxc: str | os.PathLike) -> Path:
    """The folder beside a ``.cxc`` that holds its map and model copies."""
    cxc = Path(cxc)
    return cxc.with_name(cxc.name[: -len(cxc.suffix)] if cxc.suffix else cxc.name + "_data")


def data_files(scene: Scene, cxc: str | os.PathLike) -> list[Path]:
    """The files :func:`write_chimerax` writes besides the ``.cxc`` (for output checks)."""
    folder = data_folder(cxc)
    files = [folder / "map.mrc"]
    if scene.model_source is not None:
        files.append(folder / f"model{model_suffix(scene.model_source)}")
    files += [folder / graph_copy_name(g) for g in scene.graphs if _needs_copy(g)]
    return files


def model_suffix(path: Path) -> str:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return ".pdb" if name.endswith((".pdb", ".ent")) else ".cif"


def _needs_copy(layer: GraphLayer) -> bool:
    return not layer.empty and layer.mmcif is None


def graph_copy_name(layer: GraphLayer) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", layer.label).strip("_") + ".cif"


def colour_commands(layer: GraphLayer, model_id: int) -> list[str]:
    """``color`` commands that give each node (atom) of the graph's mmCIF its page colour."""
    by_colour = layer.residues_by_colour()
    commands = []
    for colour in sorted(by_colour):
        parts = [f"#{model_id}/{c}:{runs_text(r, ',')}" for c, r in by_colour[colour].items()]
        for k in range(0, len(parts), PARTS_PER_COMMAND):
            spec = " | ".join(parts[k : k + PARTS_PER_COMMAND])
            commands.append(f"color {spec} {colour} target a")
    return commands


def _rel(path: Path, folder: Path) -> str:
    try:
        text = os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows): absolute
        text = str(path.resolve())
    return shlex.quote(Path(text).as_posix())


def write_chimerax(
    scene: Scene, path: str | os.PathLike, *, page: str | None = None, overwrite: bool = False
) -> list[Path]:
    """Write the ``.cxc`` and its data folder atomically; returns every path written."""
    path = Path(path)
    here = path.resolve().parent
    folder = data_folder(path)
    written = []
    map_file = folder / "map.mrc"
    write_map(map_file, scene.cxc_map, overwrite=overwrite)
    written.append(map_file)
    pm = scene.page_map
    nx, ny, nz = scene.cxc_map.shape_xyz
    lines = [
        f"# neural-em view of {scene.title}: the map at its contour, the model and the density "
        "graphs",
        f"# in the colours of {page or 'the view page'}. Open it in ChimeraX: "
        f"chimerax {path.name} (or File > Open).",
        "# ChimeraX runs a command file from the file's folder: the paths are relative to it.",
        "close",
        f"# map: {nx} x {ny} x {nz} voxels cropped at the contour from {scene.map_source.name}",
        f"open {_rel(map_file, here)} format mrc",
        f"volume #1 level {pm.contour:.6g} style mesh color {MAP_COLOUR}",
    ]
    model_id = 2
    if scene.model_source is not None:
        model_file = folder / f"model{model_suffix(scene.model_source)}"
        raw = scene.model_source.read_bytes()
        if scene.model_source.name.lower().endswith(".gz"):
            raw = gzip.decompress(raw)
        atomic_write_bytes(model_file, raw, overwrite=overwrite)
        written.append(model_file)
        lines += [
            f"# model: {scene.model_source.name}",
            f"open {_rel(model_file, here)}",
            f"hide #{model_id} atoms",
            f"cartoon #{model_id}",
            f"color #{model_id} {MODEL_COLOUR} target ac",
        ]
        model_id += 1
    else:
        lines.append("# model: none")
    visible = default_visible(scene)
    for k, layer in enumerate(scene.graphs):
        if layer.empty:
            lines.append(f"# graph {layer.label}: empty (no nodes), not opened")
            continue
        cif = layer.mmcif
        if cif is None:
            cif = folder / graph_copy_name(layer)
            DensityGraph.load(layer.source).save_as_mmcif(cif, overwrite=overwrite)
            written.append(cif)
        lines += [
            f"# graph {layer.label}: {len(layer.positions)} nodes, {len(layer.edges)} edges, "
            f"coloured by {layer.colour_by}",
            f"open {_rel(cif, here)} name {shlex.quote(layer.label)}",
            f"hide #{model_id} cartoons",
            f"show #{model_id} atoms",
            f"style #{model_id} ball",
            f"size #{model_id} atomRadius {0.7 if layer.method == 'backbone' else 0.5} "
            "ballScale 1 stickRadius 0.2",
            *colour_commands(layer, model_id),
        ]
        if k not in visible:
            lines.append(f"hide #{model_id} models")
        model_id += 1
    lines.append("view")
    atomic_write_text(path, "\n".join(lines) + "\n", overwrite=overwrite)
    written.append(path)
    return written


def opened_files(cxc: str | os.PathLike) -> list[Path]:
    """The files a ``.cxc`` opens (``open`` commands), resolved against its folder."""
    cxc = Path(cxc)
    out = []
    for line in cxc.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) >= 2 and words[0] == "open":
            out.append(cxc.parent / words[1])
    return out
