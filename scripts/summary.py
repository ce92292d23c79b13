"""Rule ``summary``: results/summary.html, figures and tables in one self-contained page."""

import json
from pathlib import Path
from typing import Any


def run(smk: Any) -> None:
    from neural_em.pipeline.summary import write_summary_html

    metrics = json.loads(Path(smk.input.metrics).read_text(encoding="utf-8"))
    tables = {Path(t).stem.replace("_", " "): t for t in smk.input.tables}
    views: dict[str, list[str]] = {}
    for path in smk.input.views:  # results/view/{entry}.html and .cxc
        views.setdefault(Path(path).stem, []).append(path)
    write_summary_html(metrics, list(smk.input.figures), tables, smk.output[0], views=views)


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
