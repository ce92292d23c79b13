"""summary.html's medians as tables per kind of result (pipeline.summary_tables), from the
summary that pipeline.collect.summarise writes: rows the run did not build are left out, no
value is lost, and the page shows tables, not raw keys."""

from __future__ import annotations

import re

from neural_em.pipeline.collect import SUMMARY_KEYS, summarise
from neural_em.pipeline.summary import write_summary_html
from neural_em.pipeline.summary_tables import GRAPH_COLUMNS, summary_tables, summary_tables_html


def _entry(k: int) -> dict:
    graph = {m: 0.1 * (k + 1) for m in SUMMARY_KEYS}
    return {
        "key": f"emd_{k}",
        "graph": {"spline": dict(graph)},  # the study method on the spline field only
        "graph_backbone": {"spline": {**graph, "f1": 0.8}},
        "neural": {"total_training_s": 60.0 + k, "size_ratio_crop_mrc": 0.5},
        "interpolation": {"methods": {"spline": {"mae": 0.01}, "trilinear": {"mae": 0.02}}},
    }


def test_graph_rows_are_method_by_field_and_unbuilt_ones_are_left_out() -> None:
    summary = summarise([_entry(0), _entry(1), _entry(2)])
    assert any(v is None for v in summary.values())  # the neural field's study rows: null
    t = summary_tables(summary)
    assert [(m, f) for m, f, _ in t["graphs"]] == [("study", "spline"), ("backbone", "spline")]
    backbone = t["graphs"][1][2]
    assert backbone["f1"] == 0.8 and backbone["recall"] == summary["graph_spline_recall_median"]
    assert ("neural fit: training time (s)", 61.0) in t["fits"]
    assert dict(t["interpolation"]) == {"spline": 0.01, "trilinear": 0.02}
    # every value of the summary lands in exactly one table cell
    shown = sum(v is not None for _, _, vals in t["graphs"] for v in vals.values())
    shown += len(t["fits"]) + len(t["interpolation"]) + len(t["other"])
    assert shown == sum(v is not None for k, v in summary.items() if k != "entries")


def test_summary_page_shows_tables_not_raw_keys(tmp_path) -> None:
    metrics = {"summary": summarise([_entry(0)]), "entries": {}}
    page = tmp_path / "summary.html"
    views = {"emd_0": [tmp_path / "view" / "emd_0.html", tmp_path / "view" / "emd_0.cxc"]}
    write_summary_html(metrics, [], {}, page, views=views)
    text = page.read_text()
    assert not re.search(r"graph_\w+_median", text)
    assert ">None<" not in text
    for _, title in GRAPH_COLUMNS:
        assert f"<th>{title}</th>" in text
    assert "href='view/emd_0.html'" in text and "href='view/emd_0.cxc'" in text
    assert summary_tables_html(metrics["summary"]) in text


def test_secondary_structure_medians_get_their_own_table() -> None:
    summary = summarise([_entry(0), _entry(1)])
    t = summary_tables(summary)
    backbone = dict(((m, f), v) for m, f, v in t["graphs"])[("backbone", "spline")]
    assert backbone["recall_helix"] == summary["graph_backbone_spline_recall_helix_median"]
    assert not any(k.endswith("helix_median") for k, _ in t["other"])
    page = summary_tables_html(summary)
    assert "summary-sse" in page and "helix label precision" in page
    # A run whose graphs recorded no class metric shows no such table.
    plain = {k: v for k, v in summary.items() if "helix" not in k and "strand" not in k}
    plain = {k: (None if "coil" in k else v) for k, v in plain.items()}
    assert "summary-sse" not in summary_tables_html(plain)
