"""What a view shows: the map cut down for the page, the model's backbone, each graph's nodes,
edges and colours. Both the browser page (:mod:`neural_em.view.page`) and the ChimeraX
command file (:mod:`neural_em.view.chimerax`) are written from one :class:`Scene`, so they
show the same things in the same colours.

The map copy for the page is the box of every voxel at or above the contour plus a margin
(``crop_to_contour``); where that box holds more than ``max_page_voxels``, every ``step``-th
voxel along each axis is kept (as ChimeraX's ``volume step``). Graph nodes are coloured by
their secondary-structure label ``sse`` (helix, strand, coil) where the graph has one, else
by node ``score``, else by density, in five equal-width bins of the graph's range.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neural_em.errors import InputError
from neural_em.graph.density_graph import DensityGraph
from neural_em.graph.mmcif import chain_name, mmcif_layout
from neural_em.voxelmap import VoxelMap, read_map, write_map

logger = logging.getLogger(__name__)

#: Most voxels of the page's map copy (float32: 8 MB before compression).
MAX_PAGE_VOXELS = 2_000_000
#: Most voxels of the ChimeraX map copy (float32: 256 MB).
MAX_CXC_VOXELS = 64_000_000
#: Margin (Å) kept around the voxels at or above the contour.
CROP_MARGIN_A = 5.0
#: Largest model text embedded in a page (bytes, before compression); above it the model is
#: reduced to C-alpha (and P) atoms, and above that left out of the page.
MAX_MODEL_TEXT = 12_000_000

MAP_COLOUR = "#7fa7d0"
MODEL_COLOUR = "#9467bd"
SSE_COLOURS = {"helix": "#d62728", "strand": "#f2b701", "coil": "#8c8c8c"}
UNLABELLED_COLOUR = "#d9d9d9"
#: Five bins low -> high (viridis) for node scores or densities.
BIN_COLOURS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
BACKBONE_ATOMS = ("N", "CA", "C", "O", "P")


@dataclasses.dataclass
class PageMap:
    """The page's map copy (MRC, gzip-compressed) and how it was cut from the input map."""

    mrc_gz: bytes
    contour: float
    step: int
    shape_xyz: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    full_shape_xyz: tuple[int, int, int]
    cropped: bool
    value_range: tuple[float, float]

    @property
    def note(self) -> str:
        """One sentence on what the page shows of the map."""
        nx, ny, nz = self.shape_xyz
        fx, fy, fz = self.full_shape_xyz
        parts = [f"{nx} × {ny} × {nz} voxels of {self.voxel_size[0]:.3g} Å"]
        if self.cropped:
            parts.append(
                f"cropped from {fx} × {fy} × {fz} to the voxels at or above the contour "
                f"plus {CROP_MARGIN_A:g} Å"
            )
        else:
            parts.append("the whole map")
        if self.step > 1:
            parts.append(f"one voxel in {self.step} kept along each axis (step {self.step})")
        size = len(self.mrc_gz) / 1e6
        return "; ".join(parts) + f"; {size:.2f} MB compressed in this page."


@dataclasses.dataclass
class GraphLayer:
    """One graph as drawn: nodes, edges, a colour per node, the legend and the mmCIF layout."""

    label: str
    source: Path
    method: str
    positions: np.ndarray  # (n, 3) Å
    edges: np.ndarray  # (m, 2) positions in node order
    colour_index: np.ndarray  # (n,) into palette
    palette: list[str]
    legend: list[tuple[str, str]]  # (text, colour)
    colour_by: str
    addresses: list[tuple[str, int]]  # (chain, residue number) of each node in its mmCIF
    mmcif: Path | None = None

    @property
    def empty(self) -> bool:
        return len(self.positions) == 0

    def colours(self) -> list[str]:
        """The colour of each node, in node order."""
        return [self.palette[int(k)] for k in self.colour_index]

    def residues_by_colour(self) -> dict[str, dict[str, list[tuple[int, int]]]]:
        """colour -> chain -> runs ``(first, last)`` of consecutive residue numbers of the
        nodes of that colour in the graph's mmCIF: what a viewer's colour command selects."""
        grouped: dict[str, dict[str, list[int]]] = {}
        for (chain, residue), colour in zip(self.addresses, self.colours(), strict=True):
            grouped.setdefault(colour, {}).setdefault(chain, []).append(residue)
        return {
            colour: {chain: number_runs(numbers) for chain, numbers in chains.items()}
            for colour, chains in grouped.items()
        }


def number_runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Runs ``(first, last)`` of consecutive integers in ``numbers``, sorted, repeats merged."""
    runs: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def runs_text(runs: list[tuple[int, int]], separator: str) -> str:
    """``1-4<sep>7<sep>9-10``: runs as a viewer's residue range list."""
    return separator.join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclasses.dataclass
class Scene:
    """Everything a view shows."""

    title: str
    page_map: PageMap
    cxc_map: VoxelMap
    map_source: Path
    model_source: Path | None
    model_text: str | None  # mmCIF of the model's backbone atoms for the page
    model_note: str
    graphs: list[GraphLayer]


# ---------------------------------------------------------------------------- map
def default_contour(vmap: VoxelMap) -> float:
    """A level for a map without one: mean + 3 standard deviations, below the maximum."""
    data = vmap.data
    level = float(data.mean() + 3.0 * data.std())
    top = float(data.max())
    return level if level < top else float(np.percentile(data, 99.0))


def _step_for(shape: tuple[int, ...], max_voxels: int) -> int:
    step = 1
    while math.prod(math.ceil(n / step) for n in shape) > max_voxels:
        step += 1
    return step


def _stepped(vmap: VoxelMap, step: int) -> VoxelMap:
    if step == 1:
        return vmap
    return dataclasses.replace(
        vmap,
        data=np.ascontiguousarray(vmap.data[::step, ::step, ::step]),
        voxel_size=vmap.voxel_size * step,
    )


def crop_map(vmap: VoxelMap, contour: float, *, max_voxels: int) -> tuple[VoxelMap, int, bool]:
    """The box of the voxels ``>= contour`` plus :data:`CROP_MARGIN_A`, every ``step``-th voxel
    where it holds more than ``max_voxels``: (map, step, whether it was cropped)."""
    box = vmap.crop_to_contour(contour, margin_A=CROP_MARGIN_A, raw_contour=False)
    cropped = box.data.shape != vmap.data.shape
    step = _step_for(box.data.shape, max_voxels)
    return _stepped(box, step), step, cropped


def _mrc_bytes(vmap: VoxelMap) -> bytes:
    with tempfile.TemporaryDirectory(prefix="neural-em-view-") as tmp:
        path = Path(tmp) / "map.mrc"
        write_map(path, vmap)
        return path.read_bytes()


def page_map(vmap: VoxelMap, contour: float, *, max_voxels: int = MAX_PAGE_VOXELS) -> PageMap:
    """The page's copy of ``vmap`` around ``contour`` (raw level), gzip-compressed MRC."""
    small, step, cropped = crop_map(vmap, contour, max_voxels=max_voxels)
    data = small.data
    return PageMap(
        mrc_gz=gzip.compress(_mrc_bytes(small), compresslevel=6, mtime=0),
        contour=float(contour),
        step=step,
        shape_xyz=small.shape_xyz,
        voxel_size=tuple(float(v) for v in small.voxel_size),
        full_shape_xyz=vmap.shape_xyz,
        cropped=cropped,
        value_range=(float(data.min()), float(data.max())),
    )


# ---------------------------------------------------------------------------- model
def model_backbone_text(path: str | os.PathLike) -> tuple[str | None, str]:
    """mmCIF text of the model's backbone atoms (N, CA, C, O of amino acids, P of nucleotides;
    C-alpha and P only where that is too large) and a note on what was kept."""
    import gemmi

    from neural_em.models import read_structure

    st = read_structure(path)
    st.setup_entities()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    st.remove_alternative_conformations()
    for atoms, what in ((BACKBONE_ATOMS, "backbone atoms"), (("CA", "P"), "C-alpha and P atoms")):
        trimmed = st.clone()
        for model in trimmed:
            for chain in model:
                for residue in chain:
                    for k in reversed(range(len(residue))):
                        if residue[k].name not in atoms:
                            del residue[k]
        trimmed.remove_empty_chains()
        text = trimmed.make_mmcif_document(gemmi.MmcifOutputGroups(True)).as_string()
        n_atoms = trimmed[0].count_atom_sites() if len(trimmed) else 0
        if n_atoms == 0:
            return None, "the model has no backbone atoms: not shown"
        if len(text) <= MAX_MODEL_TEXT:
            return text, f"{Path(path).name}: {n_atoms} {what}"
    return None, f"{Path(path).name}: too large for the page (open the .cxc in ChimeraX)"


# ---------------------------------------------------------------------------- graphs
def graph_label(path: Path) -> str:
    """``spline.backbone.graph.json`` -> ``spline backbone``."""
    name = path.name
    for suffix in (".graph.json", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace(".", " ").replace("_", " ").strip() or path.name


def _bins(values: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str]]]:
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
    n = len(BIN_COLOURS)
    if hi > lo:
        index = np.floor((values - lo) / (hi - lo) * n)
    else:
        index = np.full(values.shape, n - 1, dtype=float)
    index = np.clip(np.nan_to_num(index, nan=0.0), 0, n - 1).astype(np.int64)
    edges = np.linspace(lo, hi, n + 1)
    legend = [(f"{edges[k]:.3g} – {edges[k + 1]:.3g}", BIN_COLOURS[k]) for k in range(n)]
    return index, legend


def node_colours(graph: DensityGraph) -> tuple[str, np.ndarray, list[str], list[tuple[str, str]]]:
    """(attribute, colour index per node, palette, legend) of a graph's nodes."""
    nodes = graph.graph.nodes
    ids = graph.node_ids
    labels = [nodes[i].get("sse") for i in ids]
    if any(isinstance(v, str) and v in SSE_COLOURS for v in labels):
        palette = [*SSE_COLOURS.values(), UNLABELLED_COLOUR]
        keys = list(SSE_COLOURS)
        index = np.array(
            [keys.index(v) if v in SSE_COLOURS else len(keys) for v in labels], dtype=np.int64
        )
        legend = [(k, c) for k, c in SSE_COLOURS.items()]
        if (index == len(keys)).any():
            legend.append(("no label", UNLABELLED_COLOUR))
        return "sse", index, palette, legend
    for attribute in ("score", "density"):
        raw = [nodes[i].get(attribute) for i in ids]
        if ids and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            index, legend = _bins(np.asarray(raw, dtype=np.float64))
            return attribute, index, list(BIN_COLOURS), legend
    return "none", np.zeros(len(ids), dtype=np.int64), [BIN_COLOURS[2]], []


def graph_layer(path: str | os.PathLike, *, label: str | None = None) -> GraphLayer:
    """Read a ``.graph.json`` and colour its nodes; the sibling mmCIF (``X.cif`` beside
    ``X.graph.json``) is the one the ChimeraX file opens where it exists."""
    path = Path(path)
    graph = DensityGraph.load(path)
    colour_by, index, palette, legend = node_colours(graph)
    addresses: list[tuple[str, int]] = [("A", 0)] * len(graph)
    for c, members in enumerate(mmcif_layout(graph)):
        for r, k in enumerate(members):
            addresses[k] = (chain_name(c), r + 1)
    stem = path.name[: -len(".graph.json")] if path.name.endswith(".graph.json") else path.stem
    sibling = path.with_name(stem + ".cif")
    return GraphLayer(
        label=label or graph_label(path),
        source=path,
        method=str(graph.graph.graph.get("method", "study")),
        positions=graph.positions,
        edges=graph.edge_index.T.copy(),
        colour_index=index,
        palette=palette,
        legend=legend,
        colour_by=colour_by,
        addresses=addresses,
        mmcif=sibling if sibling.is_file() else None,
    )


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """A label per graph file, made unique with the parent folder's name (or a number)."""
    labels = [graph_label(p) for p in paths]
    out = []
    for k, (path, label) in enumerate(zip(paths, labels, strict=True)):
        if labels.count(label) > 1:
            label = f"{label} ({path.parent.name or k + 1})"
        while label in out:
            label = f"{label} #{k + 1}"
        out.append(label)
    return out


# ---------------------------------------------------------------------------- scene
def build_scene(
    map_path: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    graphs: Sequence[str | os.PathLike] = (),
    contour: float | None = None,
    title: str | None = None,
    max_page_voxels: int = MAX_PAGE_VOXELS,
    max_cxc_voxels: int = MAX_CXC_VOXELS,
    max_voxels: int | None = None,
) -> Scene:
    """Read the map, model and graphs of a view. ``contour``: raw density level (unset:
    :func:`default_contour`); a level no voxel reaches is bad input."""
    map_path = Path(map_path)
    if not map_path.is_file():
        raise InputError("no such map file", map_path)
    if model is not None and not Path(model).is_file():
        raise InputError("no such model file", model)
    graph_paths = [Path(g) for g in graphs]
    for g in graph_paths:
        if not g.is_file():
            raise InputError("no such graph file", g)
    if max_page_voxels < 1 or max_cxc_voxels < 1:
        raise InputError("the map budgets must be positive voxel counts")
    vmap = read_map(map_path, max_voxels=max_voxels)
    if contour is None:
        contour = default_contour(vmap)
        logger.info("%s: no contour given, showing level %.4g (mean + 3 sd)", map_path, contour)
    if not math.isfinite(contour):
        raise InputError(f"contour must be a finite number, got {contour!r}")
    top = float(vmap.data.max())
    if contour > top:
        raise InputError(
            f"contour {contour:g} is above the map's maximum {top:g}: nothing to show", map_path
        )
    pmap = page_map(vmap, contour, max_voxels=max_page_voxels)
    cxc_map, _, _ = crop_map(vmap, contour, max_voxels=max_cxc_voxels)
    del vmap
    model_text, model_note = (None, "no model")
    if model is not None:
        try:
            model_text, model_note = model_backbone_text(model)
        except (ValueError, RuntimeError) as exc:  # gemmi's own errors on a broken file
            raise InputError(f"not a readable model ({exc})", model) from exc
    layers = [
        graph_layer(p, label=lab)
        for p, lab in zip(graph_paths, unique_labels(graph_paths), strict=True)
    ]
    return Scene(
        title=title or map_path.name.split(".")[0],
        page_map=pmap,
        cxc_map=cxc_map,
        map_source=map_path,
        model_source=Path(model) if model is not None else None,
        model_text=model_text,
        model_note=model_note,
        graphs=layers,
    )


def default_visible(scene: Scene) -> set[int]:
    """The graph shown when a view opens (the others are a click away): the first backbone
    graph, or else the first graph that has nodes."""
    drawn = [k for k, g in enumerate(scene.graphs) if not g.empty]
    backbone = [k for k in drawn if scene.graphs[k].method == "backbone"]
    return set((backbone or drawn)[:1])


def scene_summary(scene: Scene) -> dict[str, Any]:
    """Counts of what the scene holds (logged by the command line)."""
    return {
        "map": scene.page_map.note,
        "model": scene.model_note,
        "graphs": {g.label: (len(g.positions), len(g.edges)) for g in scene.graphs},
    }
