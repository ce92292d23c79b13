"""The study's tables, built from metrics.json (the record :mod:`neural_em.pipeline.collect`
writes).

:func:`write_tables` writes the study's tables with its column names
(``paper_graph_residue_comparison.csv``, ``paper_graph_atomic_comparison.csv``,
``paper_interpolation_evaluation.csv`` in ``../shared/reference``) followed by this project's
columns: the spline baseline, coverage, nodes per C-alpha, times, devices, file sizes. Each
table is a row function (metrics -> rows) and a column list, registered in :data:`TABLES`.

Something that was not run is the string ``"not run"`` (:data:`NOT_RUN`) in the tables, never
a number.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_write_text
from neural_em.pipeline.collect import NOT_RUN, finite_or_none

#: The study's column names, in its order.
PAPER_GRAPH_COLUMNS = [
    "EMDB ID",
    "PDB ID",
    "Resolution",
    "Num. C-a",
    "Num. nodes",
    "% C-a with Node",
    "% Node with C-a",
    "Graph RMSD",
    "DeepTracer % matching",
    "DeepTracer RMSD",
]
PAPER_ATOMIC_COLUMNS = [
    "EMDB ID",
    "PDB ID",
    "Resolution",
    "Num. atoms",
    "% Atom with node",
    "% Node with atom",
    "Graph Atomic RMSD",
]
PAPER_INTERP_COLUMNS = [
    "PDB ID",
    "Resolution",
    "Linear Min. Error",
    "Linear Max. Error",
    "Linear MAE",
    "Neural Min. Error",
    "Neural Max. Error",
    "Neural MAE",
]
#: This project's columns after the study's.
GRAPH_EXTRA_COLUMNS = [
    "Field",
    "% C-a covered",
    "Nodes per C-a",
    "Spline Num. nodes",
    "Spline % C-a with Node",
    "Spline % Node with C-a",
    "Spline Graph RMSD",
    "Spline % C-a covered",
    "Spline Nodes per C-a",
    "Voxel count",
    "Fitted voxel count",
    "Neural region count",
    "Regions trained",
    "Total training time (s)",
    "Average region training time (s)",
    "Average loss",
    "Fit wall time (s)",
    "Fit device",
    "Preset",
    "Neural save size (bytes)",
    "Native save size (bytes)",
    "Crop MRC size (bytes)",
    "Neural / crop MRC size",
    "Spline save size (bytes)",
    "Spline fit time (s)",
    "Graph creation time (s)",
    "Spline graph creation time (s)",
    "Baseline Num. nodes",
    "Baseline % C-a with Node",
    "Baseline % Node with C-a",
    "Baseline Graph RMSD",
]
ATOMIC_EXTRA_COLUMNS = ["Field", "% Atom covered"]
#: Interpolation method -> the study's column prefix (trilinear was its "Linear").
METHOD_PREFIX = {
    "trilinear": "Linear",
    "neural": "Neural",
    "spline": "Spline",
    "fourier": "Fourier",
}
INTERP_METHOD_ORDER = ["trilinear", "neural", "spline", "fourier"]
TRAINING_COLUMNS = [
    "EMDB ID",
    "Region",
    "Voxels",
    "Epochs",
    "Loss",
    "Max error",
    "Training time (s)",
    "Stopped by",
    "Device",
]
TIMING_COLUMNS = ["EMDB ID", "Step", "Seconds", "Max RSS (MB)"]
#: The graph methods side by side: one row per entry, method and field.
GRAPH_METHOD_COLUMNS = [
    "EMDB ID",
    "Resolution",
    "Method",
    "Field",
    "Num. C-a",
    "Num. nodes",
    "Nodes per C-a",
    "Recall",
    "One-to-one precision",
    "F1",
    "Precision (any C-a)",
    "RMSD",
    "Edges",
    "Chain recall",
    "Edge precision",
    "Mean degree",
    "Graph time (s)",
]


def _pct(value: Any) -> float | None:
    v = finite_or_none(value)
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
            "EMDB ID": e["key"],
            "PDB ID": e["pdb_id"],
            "Resolution": e["resolution"],
            "Num. C-a": g.get("ca"),
            "Num. nodes": g.get("nodes"),
            "% C-a with Node": _pct(g.get("recall")),
            "% Node with C-a": _pct(g.get("precision")),
            "Graph RMSD": g.get("rmsd"),
            "DeepTracer % matching": _pct(dt.get("recall")) if dt_run else NOT_RUN,
            "DeepTracer RMSD": dt.get("rmsd") if dt_run else NOT_RUN,
            "Field": main,
            "% C-a covered": _pct(g.get("coverage")),
            "Nodes per C-a": g.get("nodes_per_ca"),
        }
        spline_run = s.get("status") != NOT_RUN
        for col, key, pct in (
            ("Spline Num. nodes", "nodes", False),
            ("Spline % C-a with Node", "recall", True),
            ("Spline % Node with C-a", "precision", True),
            ("Spline Graph RMSD", "rmsd", False),
            ("Spline % C-a covered", "coverage", True),
            ("Spline Nodes per C-a", "nodes_per_ca", False),
        ):
            row[col] = (_pct(s.get(key)) if pct else s.get(key)) if spline_run else NOT_RUN
        neural_run = n.get("status") != NOT_RUN
        row.update(
            {
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
            }
        )
        base = g.get("baseline") or s.get("baseline")
        for col, key, pct in (
            ("Baseline Num. nodes", "nodes", False),
            ("Baseline % C-a with Node", "recall", True),
            ("Baseline % Node with C-a", "precision", True),
            ("Baseline Graph RMSD", "rmsd", False),
        ):
            row[col] = (_pct(base.get(key)) if pct else base.get(key)) if base else NOT_RUN
        rows.append(row)
    return rows


def graph_method_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per entry, graph method and field: node and chain metrics side by side
    (fractions, not percentages; empty where the map has no model)."""
    from neural_em.pipeline.collect import GRAPH_RECORD

    rows = []
    methods = metrics.get("graph_methods") or ["study"]
    fields = metrics.get("graph_fields") or ["neural", "spline"]
    for e in metrics["entries"].values():
        for method in methods:
            for field in fields:
                g = (e.get(GRAPH_RECORD.get(method, "")) or {}).get(field) or {}
                if not g or g.get("status") == NOT_RUN:
                    continue
                rows.append(
                    {
                        "EMDB ID": e["key"],
                        "Resolution": e["resolution"],
                        "Method": method,
                        "Field": field,
                        "Num. C-a": g.get("ca"),
                        "Num. nodes": g.get("nodes"),
                        "Nodes per C-a": g.get("nodes_per_ca"),
                        "Recall": g.get("recall"),
                        "One-to-one precision": g.get("one_to_one_precision"),
                        "F1": g.get("f1"),
                        "Precision (any C-a)": g.get("precision"),
                        "RMSD": g.get("rmsd"),
                        "Edges": g.get("edges"),
                        "Chain recall": g.get("chain_recall"),
                        "Edge precision": g.get("edge_precision"),
                        "Mean degree": g.get("mean_degree"),
                        "Graph time (s)": g.get("seconds"),
                    }
                )
    return rows


def atomic_rows(
    metrics: Mapping[str, Any], *, below_resolution_A: float = 2.0
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
            rows.append(
                {
                    "EMDB ID": e["key"],
                    "PDB ID": e["pdb_id"],
                    "Resolution": e["resolution"],
                    "Num. atoms": next(
                        (
                            atoms[k]
                            for k in ("reference", "atoms", "n_atoms")
                            if atoms.get(k) is not None
                        ),
                        None,
                    ),
                    "% Atom with node": _pct(atoms.get("recall")),
                    "% Node with atom": _pct(atoms.get("precision")),
                    "Graph Atomic RMSD": atoms.get("rmsd"),
                    "Field": field,
                    "% Atom covered": _pct(atoms.get("coverage")),
                }
            )
    return rows


def interpolation_columns(methods: Sequence[str]) -> list[str]:
    """The interpolation table's columns: the study's, then one per method."""
    cols = list(PAPER_INTERP_COLUMNS)
    cols.insert(0, "EMDB ID")
    for m in INTERP_METHOD_ORDER + [m for m in methods if m not in INTERP_METHOD_ORDER]:
        prefix = METHOD_PREFIX.get(m, m.capitalize())
        if m not in ("trilinear", "neural"):
            cols += [f"{prefix} Min. Error", f"{prefix} Max. Error", f"{prefix} MAE"]
    for m in INTERP_METHOD_ORDER:
        prefix = METHOD_PREFIX[m]
        cols += [f"{prefix} Mean Error", f"{prefix} RMSE"]
    cols += [
        "Neural device",
        "Neural fit time (s)",
        "Simulator",
        "Control non-zero voxels",
        "Control voxels compared",
    ]
    return cols


def interpolation_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One interpolation table row per entry of ``metrics``."""
    rows = []
    for e in metrics["entries"].values():
        it = e.get("interpolation", {})
        if it.get("status") == NOT_RUN:
            continue
        row: dict[str, Any] = {
            "EMDB ID": e["key"],
            "PDB ID": e["pdb_id"],
            "Resolution": e["resolution"],
        }
        for m in INTERP_METHOD_ORDER + sorted(set(it["methods"]) - set(INTERP_METHOD_ORDER)):
            prefix = METHOD_PREFIX.get(m, m.capitalize())
            rec = it["methods"].get(m, {"status": NOT_RUN})
            run = rec.get("status") != NOT_RUN
            for col, key in (
                ("Min. Error", "min"),
                ("Max. Error", "max"),
                ("MAE", "mae"),
                ("Mean Error", "mean"),
                ("RMSE", "rmse"),
            ):
                row[f"{prefix} {col}"] = rec.get(key) if run else NOT_RUN
        neural = it["methods"].get("neural", {})
        row["Neural device"] = it.get("device") if neural.get("status") != NOT_RUN else NOT_RUN
        row["Neural fit time (s)"] = (
            neural.get("build_s") if neural.get("status") != NOT_RUN else NOT_RUN
        )
        row["Simulator"] = it.get("simulator")
        row["Control non-zero voxels"] = it.get("control_nonzero")
        row["Control voxels compared"] = it.get("evaluated_points")
        rows.append(row)
    return rows


def training_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One training table row per entry of ``metrics``."""
    rows = []
    for e in metrics["entries"].values():
        n = e.get("neural", {})
        for r in n.get("per_region", []):
            rows.append(
                {
                    "EMDB ID": e["key"],
                    "Region": r["region"],
                    "Voxels": r["voxels"],
                    "Epochs": r["epochs"],
                    "Loss": r["loss"],
                    "Max error": r["max_error"],
                    "Training time (s)": r["seconds"],
                    "Stopped by": "skipped (no density)" if r["skipped"] else r["stopped"],
                    "Device": r.get("device") or n.get("device"),
                }
            )
    return rows


def timing_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per entry of ``metrics``: every job's seconds and peak memory."""
    rows = []
    for e in metrics["entries"].values():
        for step, t in sorted(e.get("timings", {}).items()):
            rows.append(
                {
                    "EMDB ID": e["key"],
                    "Step": step,
                    "Seconds": t.get("s"),
                    "Max RSS (MB)": t.get("max_rss_mb"),
                }
            )
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with ``columns`` (missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buffer.getvalue()


#: Table name -> (rows from metrics, columns from metrics).
TABLES: dict[
    str,
    tuple[
        Callable[[Mapping[str, Any]], list[dict[str, Any]]],
        Callable[[Mapping[str, Any]], list[str]],
    ],
] = {
    "graph": (graph_rows, lambda m: PAPER_GRAPH_COLUMNS + GRAPH_EXTRA_COLUMNS),
    "atomic": (atomic_rows, lambda m: PAPER_ATOMIC_COLUMNS + ATOMIC_EXTRA_COLUMNS),
    "interpolation": (
        interpolation_rows,
        lambda m: interpolation_columns(list(m.get("interpolation_methods") or [])),
    ),
    "training": (training_rows, lambda m: list(TRAINING_COLUMNS)),
    "timings": (timing_rows, lambda m: list(TIMING_COLUMNS)),
    "graph_methods": (graph_method_rows, lambda m: list(GRAPH_METHOD_COLUMNS)),
}


def write_tables(
    metrics: Mapping[str, Any], paths: Mapping[str, str | os.PathLike]
) -> dict[str, Path]:
    """Write the CSV tables named in ``paths`` (keys: those of :data:`TABLES`: graph, atomic,
    interpolation, training, timings, graph_methods) atomically; returns what was written."""
    written = {}
    for name, path in paths.items():
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        make_rows, make_columns = TABLES[name]
        atomic_write_text(path, rows_to_csv(make_rows(metrics), make_columns(metrics)))
        written[name] = Path(path)
    return written
