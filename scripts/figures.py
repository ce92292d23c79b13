"""Rule ``figures``: the study's figures (PNG and SVG), ours beside the study's results."""

import json
from pathlib import Path
from typing import Any


def run(smk: Any) -> None:
    from neural_em.pipeline.figures import make_figures

    metrics = json.loads(Path(smk.input.metrics).read_text(encoding="utf-8"))
    outdir = Path(smk.output.png[0]).parent
    make_figures(
        metrics, outdir, reference_dir=smk.params.reference_dir, names=list(smk.params.names)
    )


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
