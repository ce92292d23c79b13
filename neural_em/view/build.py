"""One call that writes a view: the page and, optionally, the ChimeraX command file."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from neural_em.atomic import check_output_path
from neural_em.errors import InputError
from neural_em.view.chimerax import data_files, write_chimerax
from neural_em.view.page import PAGE_BUDGET_BYTES, write_page
from neural_em.view.pymol import write_pymol
from neural_em.view.scene import MAX_PAGE_VOXELS, build_scene

logger = logging.getLogger(__name__)


def write_view(
    map_path: str | os.PathLike,
    html: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    graphs: Sequence[str | os.PathLike] = (),
    cxc: str | os.PathLike | None = None,
    pml: str | os.PathLike | None = None,
    contour: float | None = None,
    title: str | None = None,
    max_page_voxels: int = MAX_PAGE_VOXELS,
    max_voxels: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the view page ``html`` (and ``cxc`` with its data folder, and ``pml`` opening the
    same files) of a map with its model and graphs; returns the paths written. Nothing is written when an output exists and
    ``overwrite`` is False, or when an input is bad (:class:`InputError`)."""
    html = Path(html)
    if pml is not None and cxc is None:
        raise InputError("the PyMOL file opens the ChimeraX file's data: give --cxc too")
    outputs = [html] + [Path(p) for p in (cxc, pml) if p is not None]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise InputError("the page and the ChimeraX file must be different files")
    for out in outputs:
        check_output_path(out, overwrite=overwrite)
    scene = build_scene(
        map_path,
        model=model,
        graphs=graphs,
        contour=contour,
        title=title,
        max_page_voxels=max_page_voxels,
        max_voxels=max_voxels,
    )
    written = []
    if cxc is not None:
        for out in data_files(scene, cxc):
            check_output_path(out, overwrite=overwrite)
    write_page(scene, html, overwrite=overwrite)
    written.append(html)
    size = html.stat().st_size
    if size > PAGE_BUDGET_BYTES:
        logger.warning("%s: %.1f MB, over the %.0f MB page budget", html, size / 1e6, 20)
    logger.info("%s: %.2f MB; map %s", html, size / 1e6, scene.page_map.note)
    if cxc is not None:
        written += write_chimerax(scene, cxc, page=html.name, overwrite=overwrite)
    if pml is not None:
        written.append(write_pymol(scene, pml, cxc=cxc, overwrite=overwrite))
    return written
