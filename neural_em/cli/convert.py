"""``neural-em convert``: turn an original-study ``.neural`` file into this project's format.

The original study saved a neural map as a tar archive of ``torch.save`` files: one SIREN state
dict per region plus metadata. Its exact layout is not documented, so the converter accepts
what such an archive can plausibly hold and refuses anything else with a clear error:

* Members are read into memory (never extracted); only regular files are considered.
  ``.json`` members are parsed as JSON; every other member is loaded with
  ``torch.load(..., weights_only=True)``, which refuses pickled code (a member that would run
  code when unpickled is refused, and nothing in it runs).
* A **region member** is either a state dict (tensors only) or a dict holding one under
  ``state_dict`` / ``model_state_dict`` / ``model`` / ``net``, optionally with its box
  (``box: [[lo], [hi]]`` or ``lo`` and ``hi``; voxel indices x, y, z, ``hi`` exclusive).
  The state dict's two-dimensional ``*weight`` tensors with their matching ``*bias`` tensors,
  in order, are the SIREN's linear layers: ``3 -> ... -> 1``, the same widths in every region.
* A **metadata member** (a dict without tensors, e.g. ``metadata.pt`` or ``metadata.json``)
  may give ``shape_xyz`` (or ``shape``), ``voxel_size``, ``origin`` (Å, x, y, z),
  ``normalisation``, ``map_id`` and ``regions`` (boxes, in the order of the region members
  sorted by name, for region members that carry no box).

Assumed conventions (those of the study and of this project): sine layers with ω0 = 30 in the
standard parameterisation, coordinates scaled to [-1, 1] over each region's voxels, targets
``2d - 1``. The regions must form a grid of overlapping tiles (as the study's did); regions of
the grid without a network count as empty.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from neural_em.cli.common import add_command
from neural_em.errors import InputError

logger = logging.getLogger(__name__)

#: Largest archive member read into memory (bytes).
MAX_MEMBER_BYTES = 2 * 1024**3
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")


def register(sub: Any) -> None:
    """Add ``neural-em convert`` to the sub-command parsers ``sub``."""
    p = add_command(
        sub,
        "convert",
        "Convert an original-study .neural file (tar of torch files) to this "
        "project's safe format.",
        "neural-em convert emd_3488_study.neural -o emd_3488.neural",
    )
    p.add_argument("old", type=Path, help="original-study .neural file (a tar archive)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .neural file")
    p.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        default=None,
        help="voxel size in Å (one value or x y z) where the archive lacks it",
    )
    p.add_argument(
        "--origin",
        type=float,
        nargs=3,
        default=None,
        help="world position (Å, x y z) of the first voxel where the archive lacks it",
    )
    p.add_argument("--float16", action="store_true", help="store weights as float16")
    p.add_argument("--force", action="store_true", help="overwrite the output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert the original study's ``.neural`` archive into this format."""
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output}: exists (pass --force to replace it)")
    vs = args.voxel_size
    if vs is not None and len(vs) not in (1, 3):
        raise InputError("--voxel-size takes one or three values")
    field = convert_study_file(args.old, voxel_size=vs, origin=args.origin)
    field.save(args.output, overwrite=args.force, float16=args.float16)
    print(f"wrote {args.output} ({len(field.trained)} regions, {field.n_parameters} parameters)")
    return 0


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_study_archive(path: str | os.PathLike) -> list[tuple[str, Any]]:
    """``(member name, object)`` for every regular file of a tar, loaded without running code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        archive = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(
            f"not a tar archive like the original study's .neural files ({exc})", path
        ) from exc
    out = []
    with archive:
        try:
            members = archive.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputError(f"corrupt or truncated tar archive ({exc})", path) from exc
        for member in members:
            if not member.isfile():
                if not member.isdir():
                    logger.warning("%s: skipping %s (not a regular file)", path, member.name)
                continue
            if member.size > MAX_MEMBER_BYTES:
                raise InputError(
                    f"member {member.name!r} is larger than {MAX_MEMBER_BYTES} bytes", path
                )
            try:
                handle = archive.extractfile(member)
                raw = handle.read() if handle is not None else b""
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise InputError(f"member {member.name!r} cannot be read ({exc})", path) from exc
            if len(raw) != member.size:
                raise InputError(f"member {member.name!r} is truncated", path)
            if member.name.lower().endswith(".json"):
                try:
                    out.append((member.name, json.loads(raw)))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise InputError(f"member {member.name!r} is not valid JSON", path) from exc
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. notes on the pickle protocol
                    obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - torch raises many types for bad data
                first = " ".join(str(exc).split())[:160]
                raise InputError(
                    f"member {member.name!r} is not a plain tensor file (refused by safe "
                    f"loading, weights_only=True: {type(exc).__name__}: {first})",
                    path,
                ) from exc
            out.append((member.name, obj))
    if not out:
        raise InputError("the archive holds no files", path)
    return out


def _tensor_items(obj: Any) -> list[tuple[str, Any]] | None:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return [(str(k), v) for k, v in obj.items()]
    return None


def _linear_layers(
    items: list[tuple[str, Any]], where: str, path: Path
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Linear (weight, bias) pairs, in state-dict order."""
    import torch

    table = dict(items)
    layers = []
    for name, tensor in items:
        if not name.endswith("weight") or tensor.ndim != 2:
            continue
        bias_name = name[: -len("weight")] + "bias"
        bias = table.get(bias_name)
        if bias is None or bias.ndim != 1 or bias.shape[0] != tensor.shape[0]:
            raise InputError(f"{where}: weight {name!r} has no matching bias {bias_name!r}", path)
        w = tensor.detach().to(dtype=torch.float32).numpy().copy()
        b = bias.detach().to(dtype=torch.float32).numpy().copy()
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise InputError(f"{where}: layer {name!r} holds NaN or infinite values", path)
        layers.append((w, b))
    if not layers:
        raise InputError(f"{where}: no linear layers (2D '*weight' tensors) found", path)
    widths = [layers[0][0].shape[1]] + [w.shape[0] for w, _ in layers]
    for k in range(1, len(layers)):
        if layers[k][0].shape[1] != layers[k - 1][0].shape[0]:
            raise InputError(f"{where}: layer sizes do not chain ({widths})", path)
    if widths[0] != 3 or widths[-1] != 1:
        raise InputError(
            f"{where}: network maps {widths[0]} -> {widths[-1]} values, not "
            "3 coordinates -> 1 density",
            path,
        )
    return layers


def _box(obj: Any, where: str, path: Path) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    if not isinstance(obj, dict):
        return None
    if "box" in obj:
        box = obj["box"]
        if isinstance(box, dict):
            lo, hi = box.get("lo"), box.get("hi")
        else:
            try:
                lo, hi = box
            except (TypeError, ValueError) as exc:
                raise InputError(f"{where}: 'box' must be [[lo], [hi]]", path) from exc
    elif "lo" in obj and "hi" in obj:
        lo, hi = obj["lo"], obj["hi"]
    else:
        return None
    try:
        lo_t = tuple(int(v) for v in _as_list(lo))
        hi_t = tuple(int(v) for v in _as_list(hi))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: box corners must be integer voxel indices", path) from exc
    if (
        len(lo_t) != 3
        or len(hi_t) != 3
        or any(a >= b or a < 0 for a, b in zip(lo_t, hi_t, strict=True))
    ):
        raise InputError(f"{where}: box {lo_t} .. {hi_t} is not a 3D box with lo < hi", path)
    return lo_t, hi_t


def _as_list(v: Any) -> list[Any]:
    if hasattr(v, "tolist"):
        v = v.tolist()
    return list(v)


# Complexity over 15: strict reader of a foreign archive: one check per member, in file order.
def convert_study_file(  # noqa: C901
    path: str | os.PathLike, *, voxel_size: Any = None, origin: Any = None
) -> Any:
    """Convert an original-study archive (see the module docstring) to a NeuralDensityMap."""
    from neural_em.fields.neural import NeuralDensityMap
    from neural_em.fields.records import RegionRecord
    from neural_em.fields.regions import Tiling
    from neural_em.voxelmap import Normalisation

    path = Path(path)
    entries = sorted(read_study_archive(path), key=lambda e: _natural_key(e[0]))
    meta: dict[str, Any] = {}
    regions: list[tuple[str, list[tuple[np.ndarray, np.ndarray]], Any]] = []
    for name, obj in entries:
        items = _tensor_items(obj)
        box = None
        if items is None and isinstance(obj, dict):
            for key in _STATE_KEYS:
                if key in obj:
                    items = _tensor_items(obj[key])
                    if items is None:
                        raise InputError(f"member {name!r}: {key!r} is not a dict of tensors", path)
                    box = _box(obj, f"member {name!r}", path)
                    break
        if items is not None:
            regions.append((name, _linear_layers(items, f"member {name!r}", path), box))
        elif isinstance(obj, dict):
            meta.update({str(k): v for k, v in obj.items()})
        else:
            raise InputError(
                f"member {name!r} holds a {type(obj).__name__}, neither a state "
                "dict nor a metadata dict",
                path,
            )
    if not regions:
        raise InputError("no region networks (state dicts) found in the archive", path)
    listed = meta.get("regions")
    boxes = []
    for k, (name, _, box) in enumerate(regions):
        if box is None and isinstance(listed, list | tuple) and len(listed) == len(regions):
            item = listed[k]
            box = _box(
                item if isinstance(item, dict) else {"box": item}, f"metadata region {k}", path
            )
        if box is None:
            raise InputError(
                f"member {name!r}: no region box (neither in the member nor in "
                "the metadata 'regions' list)",
                path,
            )
        boxes.append(box)
    widths = [3] + [w.shape[0] for w, _ in regions[0][1]]
    for name, layers, _ in regions:
        if [3] + [w.shape[0] for w, _ in layers] != widths:
            raise InputError(
                f"member {name!r}: network widths differ from the first region's {widths}", path
            )
    shape = meta.get("shape_xyz", meta.get("shape"))
    if shape is None:
        shape = [max(b[1][a] for b in boxes) for a in range(3)]
    try:
        shape = [int(v) for v in _as_list(shape)]
    except (TypeError, ValueError) as exc:
        raise InputError("metadata 'shape_xyz' must be three integers", path) from exc
    per_axis = [sorted({(b[0][a], b[1][a]) for b in boxes}) for a in range(3)]
    try:
        tiling = Tiling.from_lists(shape, [[list(t) for t in axis] for axis in per_axis])
    except InputError as exc:
        raise InputError(
            f"the region boxes do not form a grid of overlapping tiles ({exc.message})", path
        ) from exc
    index = {box: k for k, box in enumerate(boxes)}
    if len(index) != len(boxes):
        raise InputError("two region members have the same box", path)
    all_boxes = [(tuple(lo), tuple(hi)) for lo, hi in tiling.boxes()]
    records, order = [], []
    for box in all_boxes:
        if box in index:
            order.append(index[box])
            records.append(RegionRecord.untrained().to_dict())
        else:
            records.append(RegionRecord.empty().to_dict())
    n_layers = len(widths) - 1
    weights = [np.stack([regions[r][1][k][0] for r in order]) for k in range(n_layers)]
    biases = [np.stack([regions[r][1][k][1] for r in order]) for k in range(n_layers)]
    vs = voxel_size if voxel_size is not None else meta.get("voxel_size")
    org = origin if origin is not None else meta.get("origin")
    if vs is None:
        raise InputError("the archive does not give the voxel size: pass --voxel-size", path)
    if org is None:
        logger.warning("%s: no origin in the archive, using 0 (pass --origin)", path)
        org = 0.0
    norm = meta.get("normalisation")
    try:
        normalisation = Normalisation.from_dict(norm) if isinstance(norm, dict) else None
        vs_arr = np.broadcast_to(np.asarray(_as_list(vs) if np.ndim(vs) else vs, float), (3,))
        org_arr = np.broadcast_to(np.asarray(_as_list(org) if np.ndim(org) else org, float), (3,))
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata voxel size / origin not numeric ({exc})", path) from exc
    return NeuralDensityMap.from_networks(
        tiling,
        weights,
        biases,
        voxel_size=vs_arr,
        origin=org_arr,
        preset="converted",
        normalisation=normalisation,
        map_id=str(meta.get("map_id", path.stem)),
        records=records,
        extra={"converted_from": path.name},
    )
