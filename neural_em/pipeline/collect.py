"""Collect the pipeline's per-entry artefacts into one JSON record (metrics.json).

The workflow's ``collect`` rule hands :func:`collect_metrics` a manifest (entry key -> role ->
path, roles listed in :data:`ROLES`); every file is read as written by the library's commands
(``.neural`` headers, graph and metrics JSON, interpolation JSON, Snakemake benchmark TSVs).
The per-region training records of a ``.neural`` header are read strictly
(:func:`neural_em.fields.records.read_region_records`): a record of another version or with
other fields stops the collection with an error naming the file. The study's tables are built
from the result by :mod:`neural_em.pipeline.tables`.

Something that was not run (DeepTracer without a configured command, an interpolation method
left out) is ``{"status": "not run"}`` in the JSON (``"not run"`` in the tables), never a
number.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_write_text
from neural_em.errors import FieldFormatError, InputError
from neural_em.fields.kinds import FIELD_KINDS
from neural_em.graph.evaluate import ATOM_METRICS, BASELINE_METRICS, GRAPH_METRICS
from neural_em.pipeline.interpolation import ERROR_STATS, RESULT_MASK, RESULT_SCALE

logger = logging.getLogger(__name__)

NOT_RUN = "not run"
#: Fields the pipeline may draw graphs from: every kind of the registry.
GRAPH_FIELDS = tuple(FIELD_KINDS)
#: Fields beside the neural one (which has its own record): each has a manifest role ``KIND``
#: (its ``.neural`` file) and ``KIND_bench``, and a record ``{bytes, fit_s}``.
FITTED_FIELDS = tuple(kind for kind in FIELD_KINDS if kind != "neural")
#: Graph methods (:mod:`neural_em.graph.methods`), the study's first.
GRAPH_METHODS = ("study", "backbone")
#: Where each method's graphs sit in an entry's record: ``graph`` holds the study method's
#: (as it always has), ``graph_backbone`` the backbone method's; each maps field -> metrics.
GRAPH_RECORD = {"study": "graph", "backbone": "graph_backbone"}
#: Graph metrics read from a metrics JSON (``neural-em evaluate -o``): the evaluation's names.
GRAPH_KEYS = GRAPH_METRICS


#: The graph metrics whose medians the summary reports.
SUMMARY_KEYS = (*(k for k in GRAPH_KEYS if k not in ("nodes", "ca", "edges")), "seconds")


def graph_role(field: str, method: str) -> str:
    """The manifest role of a graph file: ``graph_spline`` for the study method's graph of
    the spline field, ``graph_spline_backbone`` for the backbone method's."""
    return f"graph_{field}" if method == "study" else f"graph_{field}_{method}"


#: Roles a manifest may name for an entry (all but entry_info are optional).
ROLES = (
    "entry_info",
    "map",
    "model",
    "fasta",
    "neural",
    "neural_record",
    "neural_mrc",
    "neural_bench",
    *(role for kind in FITTED_FIELDS for role in (kind, f"{kind}_bench")),
    *(
        graph_role(f, m) + suffix
        for f in GRAPH_FIELDS
        for m in GRAPH_METHODS
        for suffix in ("", "_metrics", "_bench")
    ),
    "interpolation",
    "interpolation_bench",
    "deeptracer_metrics",
    "deeptracer_bench",
)


# ====================================================================== readers
def _read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def read_benchmark(path: str | os.PathLike) -> dict[str, float]:
    """Snakemake ``benchmark:`` TSV -> {"s": seconds, "max_rss": MB, ...} (first run)."""
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        return {}
    out = {}
    for key, value in rows[0].items():
        num = finite_or_none(value)
        if num is not None:
            out[key] = num
    return out


def read_field_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a ``.neural`` file (validated by the library's reader)."""
    from neural_em.fields.fileformat import read_field_file

    header, _ = read_field_file(path)
    return header


def mrc_bytes(shape_xyz: Sequence[int]) -> int:
    """Size of a float32 MRC file of this grid: 1024-byte header + 4 bytes a voxel."""
    return 1024 + 4 * math.prod(int(n) for n in shape_xyz)


def map_shape_from_gz(path: str | os.PathLike) -> list[int] | None:
    """Voxels along x, y, z of a (compressed) MRC map, from its header alone
    (:func:`neural_em.mrcread.read_map_header`); None if the file is not a readable map."""
    from neural_em.mrcread import read_map_header

    try:
        return list(read_map_header(path, max_voxels=sys.maxsize).shape_xyz)
    except InputError:
        return None


def read_fasta_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Number of sequences and residues in a FASTA file."""
    names, residues = 0, 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                names += 1
            elif line:
                residues += len(line)
    return {"sequences": names, "residues": residues}


def training_regions(
    header: Mapping[str, Any], path: str | os.PathLike = ""
) -> list[dict[str, Any]]:
    """Per-region training records of a neural ``.neural`` header, as
    {region, voxels, epochs, loss, max_error, seconds, stopped, skipped, device}.

    The records are read strictly (:class:`~neural_em.fields.records.RegionRecord`); a record
    of another version or with other fields raises :class:`FieldFormatError` naming ``path``.
    ``seconds`` is what the library recorded for the region: with the batched trainer (all
    regions at once) the wall time until the region stopped, not a share of the total.
    """
    from neural_em.fields.records import read_region_records

    boxes = header.get("regions")
    try:
        if not isinstance(boxes, list):
            raise FieldFormatError("the region boxes are missing")
        records = read_region_records(header.get("training"), len(boxes))
        voxels = [
            float(math.prod(int(h) - int(lo) for lo, h in zip(box["lo"], box["hi"], strict=True)))
            for box in boxes
        ]
    except FieldFormatError as exc:
        raise FieldFormatError(exc.message, path or None) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise FieldFormatError(
            f"region boxes must be objects with integer 'lo' and 'hi' ({exc})", path or None
        ) from exc
    devices = header.get("devices")
    device = ",".join(map(str, devices)) if isinstance(devices, list) else devices
    return [
        {
            "region": i,
            "voxels": voxels[i],
            "epochs": float(rec.epochs),
            "loss": finite_or_none(rec.loss),
            "max_error": finite_or_none(rec.max_error),
            "seconds": finite_or_none(rec.seconds),
            "stopped": rec.stop,
            "skipped": rec.skipped,
            "device": device,
        }
        for i, rec in enumerate(records)
    ]


# ====================================================================== per entry
def _require(record: Any, keys: Sequence[str], path: str | os.PathLike, where: str) -> dict:
    """``record``'s ``keys`` (a JSON object written by the library), or an InputError naming
    the file and the first missing key."""
    if not isinstance(record, Mapping):
        raise InputError(f"{where or 'the record'} must be a JSON object", path)
    for key in keys:
        if key not in record:
            raise InputError(f"{where + ' ' if where else ''}lacks the key {key!r}", path)
    return {key: record[key] for key in keys}


def _graph_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """The metrics of a graph as ``neural-em evaluate -o`` writes them (strict:
    :data:`~neural_em.graph.evaluate.GRAPH_METRICS`, and ``atoms``/``baseline`` where
    present, with their names)."""
    raw = _read_json(path)
    metrics = _require(raw, GRAPH_KEYS, path, "the graph metrics")
    out: dict[str, Any] = {key: finite_or_none(value) for key, value in metrics.items()}
    for part, keys in (("atoms", ATOM_METRICS), ("baseline", BASELINE_METRICS)):
        if part in raw:
            values = _require(raw[part], keys, path, f"{part!r}")
            out[part] = {key: finite_or_none(value) for key, value in values.items()}
    return out


def _graph_without_model(path: str | os.PathLike) -> dict[str, Any]:
    """A graph of a map without a model: its size, and every model metric absent (None)."""
    raw = _read_json(path)
    nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
    edges = raw.get("edges") if isinstance(raw, Mapping) else None
    out: dict[str, Any] = {key: None for key in GRAPH_KEYS}
    out["nodes"] = len(nodes) if isinstance(nodes, list) else None
    out["edges"] = len(edges) if isinstance(edges, list) else None
    out["model"] = "absent"
    return out


def _graph_timings(path: str | os.PathLike) -> dict[str, float]:
    """Seconds per step from a graph JSON's graph attributes, where recorded."""
    try:
        raw = _read_json(path)
    except (OSError, ValueError):
        return {}
    attrs = raw.get("graph", {}) if isinstance(raw, Mapping) else {}
    timings = attrs.get("timings") if isinstance(attrs, Mapping) else None
    if not isinstance(timings, Mapping):
        return {}
    return {k: float(v) for k, v in timings.items() if finite_or_none(v) is not None}


def _interpolation(path: str | os.PathLike, methods: Sequence[str]) -> dict[str, Any]:
    """The interpolation experiment's record (strict: each method's errors at
    ``RESULT_SCALE``/``RESULT_MASK``, see :mod:`neural_em.pipeline.interpolation`)."""
    raw = _read_json(path)
    head = _require(raw, ("methods", "control", "coarse"), path, "the interpolation record")
    control = head["control"] if isinstance(head["control"], Mapping) else {}
    coarse = head["coarse"] if isinstance(head["coarse"], Mapping) else {}
    out: dict[str, Any] = {
        "device": raw.get("device"),
        "wall_s": finite_or_none(raw.get("wall_s")),
        "simulator": raw.get("simulator", "neural_em"),
        "control_nonzero": control.get("n_nonzero"),
        "evaluated_points": raw.get("evaluated_points"),
        "coarse_shape_xyz": coarse.get("shape_xyz"),
        "control_shape_xyz": control.get("shape_xyz"),
        "methods": {},
    }
    found = head["methods"] if isinstance(head["methods"], Mapping) else {}
    skipped = raw.get("skipped") or {}
    for method in methods:
        rec = found.get(method)
        if rec is None:
            out["methods"][method] = {
                "status": NOT_RUN,
                "reason": skipped.get(method, "not in the results"),
            }
            continue
        where = f"method {method!r}"
        scale = _require(rec, (RESULT_SCALE,), path, where)[RESULT_SCALE]
        stats = _require(scale, (RESULT_MASK,), path, f"{where} {RESULT_SCALE!r}")[RESULT_MASK]
        stats = _require(stats, ERROR_STATS, path, f"{where} {RESULT_SCALE}/{RESULT_MASK}")
        out["methods"][method] = {
            "min": finite_or_none(stats["min"]),
            "max": finite_or_none(stats["max"]),
            "mean": finite_or_none(stats["mean"]),
            "mae": finite_or_none(stats["mean_abs"]),
            "rmse": finite_or_none(stats["rmse"]),
            "max_abs": finite_or_none(stats["max_abs"]),
            "n": stats["n"],
            "build_s": finite_or_none(rec.get("build_s")),
            "evaluate_s": finite_or_none(rec.get("evaluate_s")),
        }
    return out


def _neural_record(has: Mapping[str, str]) -> dict[str, Any]:
    """The neural field's record: its header's training record, sizes, device and times."""
    header = read_field_header(has["neural"])
    regions = training_regions(header, has["neural"])
    trained = [r for r in regions if not r["skipped"]]
    seconds = [r["seconds"] for r in trained if r["seconds"] is not None]
    losses = [r["loss"] for r in trained if r["loss"] is not None]
    crop = header.get("shape_xyz")
    record = _read_json(has["neural_record"]) if "neural_record" in has else {}
    bench = read_benchmark(has["neural_bench"]) if "neural_bench" in has else {}
    total = finite_or_none(header["training"].get("seconds"))
    neural = {
        "preset": header.get("preset"),
        "crop_shape_xyz": crop,
        "crop_voxels": math.prod(crop) if crop else None,
        "regions": len(header.get("regions") or regions),
        "regions_trained": len(trained),
        "total_training_s": total if total is not None else (sum(seconds) if seconds else None),
        # the study's "Average region training time": total / regions (sequential fits);
        # for the batched trainer the same ratio is the cost per region
        "mean_region_training_s": None,
        "mean_loss": statistics.fmean(losses) if losses else None,
        "bytes": Path(has["neural"]).stat().st_size,
        "crop_mrc_bytes": (
            Path(has["neural_mrc"]).stat().st_size
            if "neural_mrc" in has
            else (mrc_bytes(crop) if crop else None)
        ),
        "device": record.get("device")
        or (
            ",".join(map(str, header["devices"]))
            if isinstance(header.get("devices"), list)
            else None
        ),
        "fit_wall_s": finite_or_none(record.get("seconds")) or finite_or_none(bench.get("s")),
        "max_rss_mb": finite_or_none(bench.get("max_rss")),
        "per_region": regions,
    }
    if neural["total_training_s"] is not None and trained:
        neural["mean_region_training_s"] = neural["total_training_s"] / len(trained)
    neural["stop_counts"] = dict(Counter(str(r["stopped"]) for r in regions))
    if neural["crop_mrc_bytes"]:
        neural["size_ratio_crop_mrc"] = neural["bytes"] / neural["crop_mrc_bytes"]
    return neural


def _fitted_field(has: Mapping[str, str], kind: str) -> dict[str, Any]:
    """The size and fitting time of a field fitted without training (or not run)."""
    if kind not in has:
        return {"status": NOT_RUN}
    bench = read_benchmark(has[f"{kind}_bench"]) if f"{kind}_bench" in has else {}
    return {"bytes": Path(has[kind]).stat().st_size, "fit_s": finite_or_none(bench.get("s"))}


def _graph_record(
    has: Mapping[str, str], role: str, wanted: bool, no_model: bool
) -> dict[str, Any]:
    """The metrics, times and size of one graph (manifest ``role``), or not run."""
    if wanted and f"{role}_metrics" not in has and no_model and role in has:
        g = _graph_without_model(has[role])
    elif not wanted or f"{role}_metrics" not in has:
        return {"status": NOT_RUN}
    else:
        g = _graph_metrics(has[f"{role}_metrics"])
    timings = _graph_timings(has[role]) if role in has else {}
    bench = read_benchmark(has[f"{role}_bench"]) if f"{role}_bench" in has else {}
    g["seconds"] = timings.get("total") or finite_or_none(bench.get("s"))
    g["job_s"] = finite_or_none(bench.get("s"))
    g["timings"] = timings
    g["bytes"] = Path(has[role]).stat().st_size if role in has else None
    return g


def collect_entry(
    key: str,
    files: Mapping[str, str],
    *,
    graph_fields: Sequence[str] = (),
    graph_methods: Sequence[str] = ("study",),
    interpolation_methods: Sequence[str] = (),
    deeptracer: bool = False,
) -> dict[str, Any]:
    """Everything known about one entry, as a JSON-able dict."""
    has = {role: path for role, path in files.items() if path and Path(path).is_file()}
    info = _read_json(files["entry_info"])
    # a local map without a model (the manifest names none): its graphs have no model metrics
    no_model = "model" not in files
    rec: dict[str, Any] = {
        "key": key,
        "emdb_id": info.get("emdb_id"),
        "pdb_id": info.get("pdb_id"),
        "resolution": finite_or_none(info.get("resolution")),
        "contour": finite_or_none(info.get("contour")),
        "title": info.get("title", ""),
    }
    if info.get("source") == "local":
        rec.update(source="local", map_file=info.get("map"), model_file=info.get("model"))
    # ---- the map
    shape = info.get("shape_xyz")
    if not shape and "map" in has:
        shape = map_shape_from_gz(has["map"])
    rec["map"] = {
        "shape_xyz": shape,
        "voxel_size": info.get("voxel_size"),
        "voxels": math.prod(shape) if shape else None,
        "mrc_bytes": mrc_bytes(shape) if shape else None,
        "gz_bytes": Path(has["map"]).stat().st_size if "map" in has else None,
    }
    if "fasta" in has:
        rec["sequences"] = read_fasta_summary(has["fasta"])
    # ---- the fields
    rec["neural"] = _neural_record(has) if "neural" in has else {"status": NOT_RUN}
    for kind in FITTED_FIELDS:  # the spline always (the baseline), others when drawn
        if kind == "spline" or kind in graph_fields:
            rec[kind] = _fitted_field(has, kind)
    # ---- graphs
    for method in GRAPH_METHODS:
        if method not in graph_methods:
            continue
        rec[GRAPH_RECORD[method]] = {
            field: _graph_record(has, graph_role(field, method), field in graph_fields, no_model)
            for field in GRAPH_FIELDS
        }
    # ---- interpolation
    if interpolation_methods and "interpolation" in has:
        rec["interpolation"] = _interpolation(has["interpolation"], interpolation_methods)
    elif interpolation_methods and no_model:
        rec["interpolation"] = {"status": NOT_RUN, "reason": "no model to simulate maps from"}
    else:
        rec["interpolation"] = {"status": NOT_RUN}
    # ---- DeepTracer
    if deeptracer and "deeptracer_metrics" in has:
        dt = _graph_metrics(has["deeptracer_metrics"])
        bench = read_benchmark(has["deeptracer_bench"]) if "deeptracer_bench" in has else {}
        dt["seconds"] = finite_or_none(bench.get("s"))
        rec["deeptracer"] = dt
    else:
        rec["deeptracer"] = {"status": NOT_RUN}
    # ---- every job's time
    rec["timings"] = {}
    for role, path in has.items():
        if role.endswith("_bench"):
            bench = read_benchmark(path)
            rec["timings"][role[: -len("_bench")]] = {
                "s": finite_or_none(bench.get("s")),
                "max_rss_mb": finite_or_none(bench.get("max_rss")),
            }
    return rec


def _median(values: Iterable[Any]) -> float | None:
    nums = [v for v in (finite_or_none(x) for x in values) if v is not None]
    return statistics.median(nums) if nums else None


def summarise(
    entries: Sequence[Mapping[str, Any]], graph_fields: Sequence[str] = GRAPH_FIELDS
) -> dict[str, Any]:
    """Medians over the entries of the headline numbers (a graph's median is left out where
    no entry has the number, unless it is a study-method graph of ``graph_fields``)."""

    def get(e: Mapping[str, Any], *path: str) -> Any:
        cur: Any = e
        for p in path:
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(p)
        return cur

    out: dict[str, Any] = {"entries": len(entries)}
    for method, record in GRAPH_RECORD.items():
        prefix = "graph" if method == "study" else f"graph_{method}"
        for field in GRAPH_FIELDS:
            for m in SUMMARY_KEYS:
                values = [get(e, record, field, m) for e in entries]
                drawn = method == "study" and field in graph_fields
                if not drawn and all(v is None for v in values):
                    continue
                out[f"{prefix}_{field}_{m}_median"] = _median(values)
    out["training_s_median"] = _median(get(e, "neural", "total_training_s") for e in entries)
    out["region_training_s_median"] = _median(
        get(e, "neural", "mean_region_training_s") for e in entries
    )
    out["size_ratio_crop_mrc_median"] = _median(
        get(e, "neural", "size_ratio_crop_mrc") for e in entries
    )
    methods = sorted({m for e in entries for m in (get(e, "interpolation", "methods") or {})})
    for m in methods:
        out[f"interpolation_{m}_mae_median"] = _median(
            get(e, "interpolation", "methods", m, "mae") for e in entries
        )
    return out


def collect_metrics(
    manifest: Mapping[str, Mapping[str, str]],
    *,
    graph_fields: Sequence[str] = ("neural", "spline"),
    graph_methods: Sequence[str] = ("study",),
    interpolation_methods: Sequence[str] = (),
    deeptracer: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """All entries of a run: ``{"entries": {key: record}, "summary": {...}, "settings": ...}``."""
    from neural_em._version import __version__

    entries = {}
    for key in sorted(manifest):
        entries[key] = collect_entry(
            key,
            manifest[key],
            graph_fields=graph_fields,
            graph_methods=graph_methods,
            interpolation_methods=interpolation_methods,
            deeptracer=deeptracer,
        )
        logger.info("collected %s", key)
    return {
        "neural_em_version": __version__,
        "graph_fields": list(graph_fields),
        "graph_methods": list(graph_methods),
        "interpolation_methods": list(interpolation_methods),
        "deeptracer": "run" if deeptracer else NOT_RUN,
        "entries": entries,
        "summary": summarise(list(entries.values()), graph_fields),
        "settings": dict(settings or {}),
    }


def write_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """metrics.json, atomically (NaN refused: missing values are null)."""
    return atomic_write_text(
        path, json.dumps(metrics, indent=2, allow_nan=False, default=str) + "\n"
    )
