"""``neural-em view``: a map with its model and graphs in an interactive page (and ChimeraX)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from neural_em.cli.common import add_command, add_max_voxels, positive_int

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "view",
        "A map with its model and density graphs in one self-contained HTML page (NGL, "
        "works offline): the map as a surface at its contour (level adjustable), the model as "
        "a cartoon, each graph as spheres and bonds that can be shown or hidden, backbone "
        "nodes coloured by secondary structure where labelled (else by score or density). "
        "--cxc also writes a ChimeraX command file with the same scene and colours, its map "
        "and model copies in a folder beside it.",
        "neural-em view emd_3488.mrc --model 5ni1.cif --contour 0.1 "
        "--graph spline.backbone.graph.json -o emd_3488.html --cxc emd_3488.cxc",
    )
    p.add_argument("map", type=Path, help="MRC/MAP/CCP4 map (optionally .gz)")
    p.add_argument("--model", type=Path, default=None, help="atomic model, PDB or mmCIF")
    p.add_argument(
        "--graph",
        type=Path,
        action="append",
        default=None,
        metavar="G.graph.json",
        help="a graph to show (repeatable); its mmCIF X.cif beside X.graph.json is what "
        "the ChimeraX file opens",
    )
    p.add_argument(
        "--contour",
        type=float,
        default=None,
        metavar="C",
        help="raw density level of the surface; unset: mean + 3 standard deviations",
    )
    p.add_argument("--title", default=None, help="page title; unset: the map's file name")
    p.add_argument(
        "--max-page-voxels",
        type=positive_int,
        default=2_000_000,
        metavar="N",
        help="largest map copy in the page: the map is cropped at the contour, then every "
        "n-th voxel kept until it fits (the page says so)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the page (.html)")
    p.add_argument("--cxc", type=Path, default=None, help="also write a ChimeraX command file")
    p.add_argument("--pml", type=Path, default=None, help="also write a PyMOL script (needs --cxc)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_max_voxels(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neural_em.errors import InputError
    from neural_em.view.assets import ViewerAssetError
    from neural_em.view.build import write_view

    if args.output.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"the page must be an .html file, got {args.output}")
    if args.cxc is not None and args.cxc.suffix.lower() != ".cxc":
        raise InputError(f"the ChimeraX file must end in .cxc, got {args.cxc}")
    if args.pml is not None and args.pml.suffix.lower() != ".pml":
        raise InputError(f"the PyMOL file must end in .pml, got {args.pml}")
    try:
        written = write_view(
            args.map,
            args.output,
            model=args.model,
            graphs=args.graph or (),
            cxc=args.cxc,
            pml=args.pml,
            contour=args.contour,
            title=args.title,
            max_page_voxels=args.max_page_voxels,
            max_voxels=args.max_voxels,
            overwrite=args.force,
        )
    except ViewerAssetError as exc:
        raise InputError(str(exc)) from exc
    size = args.output.stat().st_size / 1e6
    print(f"{args.map.name}: view page {args.output} ({size:.1f} MB), {len(written)} files")
    return 0
