"""Collect the pipeline's per-entry results into one JSON record and CSV tables.

The workflow's ``collect`` rule hands :func:`collect_metrics` a manifest (entry key -> role ->
path, roles listed in :data:`ROLES`); every file is read as written by the library's commands
(``.neural`` headers, graph and metrics JSON, interpolation JSON, Snakemake benchmark TSVs).
:func:`write_tables` writes the study's tables with its column names
(``paper_graph_residue_comparison.csv``, ``paper_graph_atomic_comparison.csv``,
``paper_interpolation_evaluation.csv`` in ``../shared/reference``) followed by this project's
columns: the spline baseline, coverage, nodes per C-alpha, times, devices, file sizes.

Something that was not run (DeepTracer without a configured command, an interpolation method
left out) is the string ``"not run"`` in the tables and ``{"status": "not run"}`` in the JSON,
never a number.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_write_text

logger = logging.getLogger(__name__)

NOT_RUN = "not run"
#: The study's column names, in its order.
PAPER_GRAPH_COLUMNS = ["EMDB ID", "PDB ID", "Resolution", "Num. C-a", "Num. nodes",
                       "% C-a with Node", "% Node with C-a", "Graph RMSD",
                       "DeepTracer % matching", "DeepTracer RMSD"]
PAPER_ATOMIC_COLUMNS = ["EMDB ID", "PDB ID", "Resolution", "Num. atoms", "% Atom with node",
                        "% Node with atom", "Graph Atomic RMSD"]
PAPER_INTERP_COLUMNS = ["PDB ID", "Resolution", "Linear Min. Error", "Linear Max. Error",
                        "Linear MAE", "Neural Min. Error", "Neural Max. Error", "Neural MAE"]
#: This project's columns after the study's.
GRAPH_EXTRA_COLUMNS = [
    "Field", "% C-a covered", "Nodes per C-a",
    "Spline Num. nodes", "Spline % C-a with Node", "Spline % Node with C-a",
    "Spline Graph RMSD", "Spline % C-a covered", "Spline Nodes per C-a",
    "Voxel count", "Fitted voxel count", "Neural region count", "Regions trained",
    "Total training time (s)", "Average region training time (s)", "Average loss",
    "Fit wall time (s)", "Fit device", "Preset",
    "Neural save size (bytes)", "Native save size (bytes)", "Crop MRC size (bytes)",
    "Neural / crop MRC size", "Spline save size (bytes)", "Spline fit time (s)",
    "Graph creation time (s)", "Spline graph creation time (s)",
    "Baseline Num. nodes", "Baseline % C-a with Node", "Baseline % Node with C-a",
    "Baseline Graph RMSD",
]
ATOMIC_EXTRA_COLUMNS = ["Field", "% Atom covered"]
#: Interpolation method -> the study's column prefix (trilinear was its "Linear").
METHOD_PREFIX = {"trilinear": "Linear", "neural": "Neural", "spline": "Spline",
                 "fourier": "Fourier"}
INTERP_METHOD_ORDER = ["trilinear", "neural", "spline", "fourier"]
TRAINING_COLUMNS = ["EMDB ID", "Region", "Voxels", "Epochs", "Loss", "Max error",
                    "Training time (s)", "Stopped by", "Device"]
TIMING_COLUMNS = ["EMDB ID", "Step", "Seconds", "Max RSS (MB)"]
#: Roles a manifest may name for an entry (all but entry_info are optional).
ROLES = ("entry_info", "map", "model", "fasta", "neural", "neural_record", "neural_mrc", "neural_bench", "spline",
         "spline_bench", "graph_neural", "graph_neural_metrics", "graph_neural_bench",
         "graph_spline", "graph_spline_metrics", "graph_spline_bench", "interpolation",
         "interpolation_bench", "deeptracer_metrics", "deeptracer_bench")


# ====================================================================== readers
def _read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _num(value: Any) -> float | None:
    """A finite float, or None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _pick(record: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """The first of ``names`` present (and not None) in ``record``."""
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return default


def read_benchmark(path: str | os.PathLike) -> dict[str, float]:
    """Snakemake ``benchmark:`` TSV -> {"s": seconds, "max_rss": MB, ...} (first run)."""
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        return {}
    out = {}
    for key, value in rows[0].items():
        num = _num(value)
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
    """NX, NY, NZ from a (gzipped) MRC header, reading only the header."""
    import numpy as np

    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if len(head) < 12:
        return None
    dims = np.frombuffer(head[:12], dtype="<i4")
    if np.any(dims <= 0) or np.any(dims > 1 << 16):
        dims = np.frombuffer(head[:12], dtype=">i4")
    return [int(n) for n in dims]


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


def _box_voxels(box: Any) -> float | None:
    """Voxels of a region record: ``shape_xyz``/``shape``, or ``lo``/``hi`` (end exclusive)."""
    if not isinstance(box, Mapping):
        return None
    shape = _pick(box, "shape_xyz", "shape")
    if shape is None and isinstance(box.get("lo"), list) and isinstance(box.get("hi"), list):
        shape = [int(h) - int(lo) for lo, h in zip(box["lo"], box["hi"], strict=False)]
    if isinstance(shape, list | tuple) and len(shape) == 3:
        return float(math.prod(int(n) for n in shape))
    return None


def training_regions(header: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-region training records of a neural ``.neural`` header, normalised to
    {region, voxels, epochs, loss, max_error, seconds, stopped, skipped, device}.

    ``seconds`` is what the library recorded for the region: with the batched trainer (all
    regions at once) the wall time until the region stopped, not a share of the total.
    """
    training = header.get("training")
    if isinstance(training, Mapping):
        records = _pick(training, "regions", "per_region", "records", default=[])
    elif isinstance(training, list):
        records = training
    else:
        records = []
    regions = header.get("regions") if isinstance(header.get("regions"), list) else []
    devices = header.get("devices")
    device = ",".join(map(str, devices)) if isinstance(devices, list) else devices
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            continue
        voxels = _num(_pick(rec, "voxels", "n_voxels", "num_voxels"))
        if voxels is None:
            voxels = _box_voxels(rec) or (_box_voxels(regions[i]) if i < len(regions) else None)
        stopped = _pick(rec, "stop", "stopped", "stop_reason", "stopped_by", "reason")
        out.append({
            "region": int(_pick(rec, "region", "index", "id", default=i)),
            "voxels": voxels,
            "epochs": _num(_pick(rec, "epochs", "n_epochs", "epoch")),
            "loss": _num(_pick(rec, "best_loss", "loss", "final_loss")),
            "max_error": _num(_pick(rec, "max_error", "max_abs_error")),
            "seconds": _num(_pick(rec, "seconds", "time_s", "training_s", "train_s",
                                  "training_time_s", "time")),
            "stopped": stopped,
            "skipped": bool(_pick(rec, "skipped", default=False)) or stopped == "empty",
            "device": _pick(rec, "device", default=device),
        })
    return out


# ====================================================================== per entry
def _graph_metrics(path: str | os.PathLike) -> dict[str, Any]:
    raw = _read_json(path)
    metrics = dict(raw.get("metrics", raw)) if isinstance(raw, Mapping) else {}
    out: dict[str, Any] = {}
    for key in ("recall", "coverage", "precision", "rmsd", "nodes", "ca", "nodes_per_ca"):
        out[key] = _num(metrics.get(key))
    atoms = metrics.get("atoms") or metrics.get("atomic") or metrics.get("atom")
    if isinstance(atoms, Mapping):
        out["atoms"] = {k: _num(atoms.get(k)) for k in
                        ("recall", "coverage", "precision", "rmsd", "reference", "atoms",
                         "n_atoms", "nodes")
                        if k in atoms}
    baseline = metrics.get("baseline") or metrics.get("local_maxima")
    if isinstance(baseline, Mapping):
        out["baseline"] = {k: _num(baseline.get(k)) for k in
                           ("recall", "coverage", "precision", "rmsd", "nodes", "nodes_per_ca")
                           if k in baseline}
    return out


def _graph_without_model(path: str | os.PathLike) -> dict[str, Any]:
    """A graph of a map without a model: its size, and every model metric absent (None)."""
    raw = _read_json(path)
    nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
    edges = raw.get("edges", raw.get("links")) if isinstance(raw, Mapping) else None
    out: dict[str, Any] = {key: None for key in ("recall", "coverage", "precision", "rmsd",
                                                 "ca", "nodes_per_ca")}
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
    return {k: float(v) for k, v in timings.items() if _num(v) is not None}


def _interpolation(path: str | os.PathLike, methods: Sequence[str]) -> dict[str, Any]:
    raw = _read_json(path)
    out: dict[str, Any] = {"device": raw.get("device"), "wall_s": _num(raw.get("wall_s")),
                           "simulator": raw.get("simulator", "neural_em"),
                           "control_nonzero": (raw.get("control") or {}).get("n_nonzero"),
                           "evaluated_points": raw.get("evaluated_points"),
                           "coarse_shape_xyz": (raw.get("coarse") or {}).get("shape_xyz"),
                           "control_shape_xyz": (raw.get("control") or {}).get("shape_xyz"),
                           "methods": {}}
    found = raw.get("methods") or {}
    skipped = raw.get("skipped") or {}
    for method in methods:
        rec = found.get(method)
        if not isinstance(rec, Mapping):
            out["methods"][method] = {"status": NOT_RUN,
                                      "reason": skipped.get(method, "not in the results")}
            continue
        scale = rec.get("common") or rec.get("normalised") or rec
        stats = scale.get("nonzero") or scale
        out["methods"][method] = {
            "min": _num(stats.get("min")), "max": _num(stats.get("max")),
            "mean": _num(stats.get("mean")), "mae": _num(stats.get("mean_abs")),
            "rmse": _num(stats.get("rmse")), "max_abs": _num(stats.get("max_abs")),
            "n": stats.get("n"), "build_s": _num(rec.get("build_s")),
            "evaluate_s": _num(rec.get("evaluate_s")),
        }
    return out


def collect_entry(key: str, files: Mapping[str, str], *, graph_fields: Sequence[str] = (),
                  interpolation_methods: Sequence[str] = (),
                  deeptracer: bool = False) -> dict[str, Any]:
    """Everything known about one entry, as a JSON-able dict."""
    has = {role: path for role, path in files.items() if path and Path(path).is_file()}
    info = _read_json(files["entry_info"])
    # a local map without a model (the manifest names none): its graphs have no model metrics
    no_model = "model" not in files
    rec: dict[str, Any] = {
        "key": key,
        "emdb_id": info.get("emdb_id"),
        "pdb_id": info.get("pdb_id"),
        "resolution": _num(info.get("resolution")),
        "contour": _num(info.get("contour")),
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
    # ---- the neural field
    if "neural" in has:
        header = read_field_header(has["neural"])
        regions = training_regions(header)
        trained = [r for r in regions if not r["skipped"]]
        seconds = [r["seconds"] for r in trained if r["seconds"] is not None]
        losses = [r["loss"] for r in trained if r["loss"] is not None]
        crop = header.get("shape_xyz")
        record = _read_json(has["neural_record"]) if "neural_record" in has else {}
        bench = read_benchmark(has["neural_bench"]) if "neural_bench" in has else {}
        training = header.get("training") if isinstance(header.get("training"), Mapping) else {}
        total = _num(_pick(training, "total_s", "seconds", "total_seconds", "wall_s"))
        neural = {
            "preset": header.get("preset"),
            "crop_shape_xyz": crop,
            "crop_voxels": math.prod(crop) if crop else None,
            "regions": len(header.get("regions") or regions),
            "regions_trained": len(trained),
            "total_training_s": total if total is not None else (sum(seconds) if seconds
                                                                 else None),
            # the study's "Average region training time": total / regions (sequential fits);
            # for the batched trainer the same ratio is the cost per region
            "mean_region_training_s": None,
            "mean_loss": statistics.fmean(losses) if losses else None,
            "bytes": Path(has["neural"]).stat().st_size,
            "crop_mrc_bytes": (Path(has["neural_mrc"]).stat().st_size if "neural_mrc" in has
                               else (mrc_bytes(crop) if crop else None)),
            "device": record.get("device") or _pick(training, "device", "devices") or (
                ",".join(map(str, header["devices"])) if isinstance(header.get("devices"), list)
                else None),
            "fit_wall_s": _num(record.get("seconds")) or _num(bench.get("s")),
            "max_rss_mb": _num(bench.get("max_rss")),
            "per_region": regions,
        }
        if neural["total_training_s"] is not None and trained:
            neural["mean_region_training_s"] = neural["total_training_s"] / len(trained)
        neural["stop_counts"] = dict(Counter(str(r["stopped"]) for r in regions))
        if neural["crop_mrc_bytes"]:
            neural["size_ratio_crop_mrc"] = neural["bytes"] / neural["crop_mrc_bytes"]
        rec["neural"] = neural
    else:
        rec["neural"] = {"status": NOT_RUN}
    if "spline" in has:
        bench = read_benchmark(has["spline_bench"]) if "spline_bench" in has else {}
        rec["spline"] = {"bytes": Path(has["spline"]).stat().st_size,
                         "fit_s": _num(bench.get("s"))}
    else:
        rec["spline"] = {"status": NOT_RUN}
    # ---- graphs
    rec["graph"] = {}
    for field in ("neural", "spline"):
        role = f"graph_{field}_metrics"
        if field in graph_fields and role not in has and no_model and f"graph_{field}" in has:
            g = _graph_without_model(has[f"graph_{field}"])
        elif field not in graph_fields or role not in has:
            rec["graph"][field] = {"status": NOT_RUN}
            continue
        else:
            g = _graph_metrics(has[role])
        timings = _graph_timings(has[f"graph_{field}"]) if f"graph_{field}" in has else {}
        bench = (read_benchmark(has[f"graph_{field}_bench"]) if f"graph_{field}_bench" in has
                 else {})
        g["seconds"] = timings.get("total") or _num(bench.get("s"))
        g["job_s"] = _num(bench.get("s"))
        g["timings"] = timings
        g["bytes"] = Path(has[f"graph_{field}"]).stat().st_size if f"graph_{field}" in has \
            else None
        rec["graph"][field] = g
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
        dt["seconds"] = _num(bench.get("s"))
        rec["deeptracer"] = dt
    else:
        rec["deeptracer"] = {"status": NOT_RUN}
    # ---- every job's time
    rec["timings"] = {}
    for role, path in has.items():
        if role.endswith("_bench"):
            bench = read_benchmark(path)
            rec["timings"][role[: -len("_bench")]] = {"s": _num(bench.get("s")),
                                                       "max_rss_mb": _num(bench.get("max_rss"))}
    return rec


def _median(values: Iterable[Any]) -> float | None:
    nums = [v for v in (_num(x) for x in values) if v is not None]
    return statistics.median(nums) if nums else None


def summarise(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians over the entries of the headline numbers."""
    def get(e: Mapping[str, Any], *path: str) -> Any:
        cur: Any = e
        for p in path:
            if not isinstance(cur, Mapping):
                return None
            cur = cur.get(p)
        return cur

    out: dict[str, Any] = {"entries": len(entries)}
    for field in ("neural", "spline"):
        for m in ("recall", "coverage", "precision", "rmsd", "nodes_per_ca", "seconds"):
            out[f"graph_{field}_{m}_median"] = _median(get(e, "graph", field, m)
                                                       for e in entries)
    out["training_s_median"] = _median(get(e, "neural", "total_training_s") for e in entries)
    out["region_training_s_median"] = _median(get(e, "neural", "mean_region_training_s")
                                              for e in entries)
    out["size_ratio_crop_mrc_median"] = _median(get(e, "neural", "size_ratio_crop_mrc")
                                                for e in entries)
    methods = sorted({m for e in entries
                      for m in (get(e, "interpolation", "methods") or {})})
    for m in methods:
        out[f"interpolation_{m}_mae_median"] = _median(
            get(e, "interpolation", "methods", m, "mae") for e in entries)
    return out


def collect_metrics(manifest: Mapping[str, Mapping[str, str]], *,
                    graph_fields: Sequence[str] = ("neural", "spline"),
                    interpolation_methods: Sequence[str] = (),
                    deeptracer: bool = False,
                    settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """All entries of a run: ``{"entries": {key: record}, "summary": {...}, "settings": ...}``."""
    from neural_em import __version__

    entries = {}
    for key in sorted(manifest):
        entries[key] = collect_entry(key, manifest[key], graph_fields=graph_fields,
                                     interpolation_methods=interpolation_methods,
                                     deeptracer=deeptracer)
        logger.info("collected %s", key)
    return {
        "neural_em_version": __version__,
        "graph_fields": list(graph_fields),
        "interpolation_methods": list(interpolation_methods),
        "deeptracer": "run" if deeptracer else NOT_RUN,
        "entries": entries,
        "summary": summarise(list(entries.values())),
        "settings": dict(settings or {}),
    }


# ====================================================================== tables
def _pct(value: Any) -> float | None:
    v = _num(value)
    return None if v is None else 100.0 * v


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return value


def graph_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per entry: the study's residue-level columns, then this project's."""
    rows = []
    fields = metrics.get("graph_fields") or ["neural", "spline"]
    main = "neural" if "neural" in fields else fields[0]
    for e in metrics["entries"].values():
        g = e["graph"].get(main, {})
        s = e["graph"].get("spline", {})
        n = e.get("neural", {})
        dt = e.get("deeptracer", {})
        dt_run = dt.get("status") != NOT_RUN
        row = {
            "EMDB ID": e["key"], "PDB ID": e["pdb_id"], "Resolution": e["resolution"],
            "Num. C-a": g.get("ca"), "Num. nodes": g.get("nodes"),
            "% C-a with Node": _pct(g.get("recall")), "% Node with C-a": _pct(g.get("precision")),
            "Graph RMSD": g.get("rmsd"),
            "DeepTracer % matching": _pct(dt.get("recall")) if dt_run else NOT_RUN,
            "DeepTracer RMSD": dt.get("rmsd") if dt_run else NOT_RUN,
            "Field": main,
            "% C-a covered": _pct(g.get("coverage")), "Nodes per C-a": g.get("nodes_per_ca"),
        }
        spline_run = s.get("status") != NOT_RUN
        for col, key, pct in (("Spline Num. nodes", "nodes", False),
                              ("Spline % C-a with Node", "recall", True),
                              ("Spline % Node with C-a", "precision", True),
                              ("Spline Graph RMSD", "rmsd", False),
                              ("Spline % C-a covered", "coverage", True),
                              ("Spline Nodes per C-a", "nodes_per_ca", False)):
            row[col] = (_pct(s.get(key)) if pct else s.get(key)) if spline_run else NOT_RUN
        neural_run = n.get("status") != NOT_RUN
        row.update({
            "Voxel count": e["map"].get("voxels"),
            "Fitted voxel count": n.get("crop_voxels"),
            "Neural region count": n.get("regions"),
            "Regions trained": n.get("regions_trained"),
            "Total training time (s)": n.get("total_training_s"),
            "Average region training time (s)": n.get("mean_region_training_s"),
            "Average loss": n.get("mean_loss"),
            "Fit wall time (s)": n.get("fit_wall_s"),
            "Fit device": n.get("device") if neural_run else NOT_RUN,
            "Preset": n.get("preset"),
            "Neural save size (bytes)": n.get("bytes"),
            "Native save size (bytes)": e["map"].get("mrc_bytes"),
            "Crop MRC size (bytes)": n.get("crop_mrc_bytes"),
            "Neural / crop MRC size": n.get("size_ratio_crop_mrc"),
            "Spline save size (bytes)": e.get("spline", {}).get("bytes"),
            "Spline fit time (s)": e.get("spline", {}).get("fit_s"),
            "Graph creation time (s)": g.get("seconds"),
            "Spline graph creation time (s)": s.get("seconds") if spline_run else NOT_RUN,
        })
        base = g.get("baseline") or s.get("baseline")
        for col, key, pct in (("Baseline Num. nodes", "nodes", False),
                              ("Baseline % C-a with Node", "recall", True),
                              ("Baseline % Node with C-a", "precision", True),
                              ("Baseline Graph RMSD", "rmsd", False)):
            row[col] = ((_pct(base.get(key)) if pct else base.get(key)) if base
                        else NOT_RUN)
        rows.append(row)
    return rows


def atomic_rows(metrics: Mapping[str, Any], *, below_resolution_A: float = 2.0
                ) -> list[dict[str, Any]]:
    """The study's atom-level table (maps better than 2 Å), where the metrics have atoms."""
    rows = []
    for e in metrics["entries"].values():
        if e["resolution"] is None or e["resolution"] >= below_resolution_A:
            continue
        for field in metrics.get("graph_fields") or []:
            atoms = e["graph"].get(field, {}).get("atoms")
            if not atoms:
                continue
            rows.append({
                "EMDB ID": e["key"], "PDB ID": e["pdb_id"], "Resolution": e["resolution"],
                "Num. atoms": _pick(atoms, "reference", "atoms", "n_atoms"),
                "% Atom with node": _pct(atoms.get("recall")),
                "% Node with atom": _pct(atoms.get("precision")),
                "Graph Atomic RMSD": atoms.get("rmsd"),
                "Field": field, "% Atom covered": _pct(atoms.get("coverage")),
            })
    return rows


def interpolation_columns(methods: Sequence[str]) -> list[str]:
    cols = list(PAPER_INTERP_COLUMNS)
    cols.insert(0, "EMDB ID")
    for m in INTERP_METHOD_ORDER + [m for m in methods if m not in INTERP_METHOD_ORDER]:
        prefix = METHOD_PREFIX.get(m, m.capitalize())
        if m not in ("trilinear", "neural"):
            cols += [f"{prefix} Min. Error", f"{prefix} Max. Error", f"{prefix} MAE"]
    for m in INTERP_METHOD_ORDER:
        prefix = METHOD_PREFIX[m]
        cols += [f"{prefix} Mean Error", f"{prefix} RMSE"]
    cols += ["Neural device", "Neural fit time (s)", "Simulator", "Control non-zero voxels",
             "Control voxels compared"]
    return cols


def interpolation_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in metrics["entries"].values():
        it = e.get("interpolation", {})
        if it.get("status") == NOT_RUN:
            continue
        row: dict[str, Any] = {"EMDB ID": e["key"], "PDB ID": e["pdb_id"],
                               "Resolution": e["resolution"]}
        for m in INTERP_METHOD_ORDER + sorted(set(it["methods"]) - set(INTERP_METHOD_ORDER)):
            prefix = METHOD_PREFIX.get(m, m.capitalize())
            rec = it["methods"].get(m, {"status": NOT_RUN})
            run = rec.get("status") != NOT_RUN
            for col, key in (("Min. Error", "min"), ("Max. Error", "max"), ("MAE", "mae"),
                             ("Mean Error", "mean"), ("RMSE", "rmse")):
                row[f"{prefix} {col}"] = rec.get(key) if run else NOT_RUN
        neural = it["methods"].get("neural", {})
        row["Neural device"] = it.get("device") if neural.get("status") != NOT_RUN else NOT_RUN
        row["Neural fit time (s)"] = (neural.get("build_s") if neural.get("status") != NOT_RUN
                                      else NOT_RUN)
        row["Simulator"] = it.get("simulator")
        row["Control non-zero voxels"] = it.get("control_nonzero")
        row["Control voxels compared"] = it.get("evaluated_points")
        rows.append(row)
    return rows


def training_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in metrics["entries"].values():
        n = e.get("neural", {})
        for r in n.get("per_region", []):
            rows.append({"EMDB ID": e["key"], "Region": r["region"], "Voxels": r["voxels"],
                         "Epochs": r["epochs"], "Loss": r["loss"], "Max error": r["max_error"],
                         "Training time (s)": r["seconds"],
                         "Stopped by": "skipped (no density)" if r["skipped"] else r["stopped"],
                         "Device": r.get("device") or n.get("device")})
    return rows


def timing_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for e in metrics["entries"].values():
        for step, t in sorted(e.get("timings", {}).items()):
            rows.append({"EMDB ID": e["key"], "Step": step, "Seconds": t.get("s"),
                         "Max RSS (MB)": t.get("max_rss_mb")})
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buffer.getvalue()


def write_tables(metrics: Mapping[str, Any], paths: Mapping[str, str | os.PathLike]
                 ) -> dict[str, Path]:
    """Write the CSV tables named in ``paths`` (keys: graph, atomic, interpolation, training,
    timings) atomically; returns what was written."""
    methods = list(metrics.get("interpolation_methods") or [])
    tables = {
        "graph": (graph_rows, PAPER_GRAPH_COLUMNS + GRAPH_EXTRA_COLUMNS),
        "atomic": (atomic_rows, PAPER_ATOMIC_COLUMNS + ATOMIC_EXTRA_COLUMNS),
        "interpolation": (interpolation_rows, interpolation_columns(methods)),
        "training": (training_rows, TRAINING_COLUMNS),
        "timings": (timing_rows, TIMING_COLUMNS),
    }
    written = {}
    for name, path in paths.items():
        if name not in tables:
            raise ValueError(f"unknown table {name!r} (known: {', '.join(tables)})")
        make, columns = tables[name]
        atomic_write_text(path, rows_to_csv(make(metrics), columns))
        written[name] = Path(path)
    return written


def write_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """metrics.json, atomically (NaN refused: missing values are null)."""
    return atomic_write_text(path, json.dumps(metrics, indent=2, allow_nan=False,
                                              default=str) + "\n")
