"""Rule ``table_html``: a CSV table as an HTML page for the Snakemake report."""

from typing import Any


def run(smk: Any) -> None:
    from neural_em.pipeline.summary import write_table_html

    write_table_html(smk.input[0], smk.output[0], title=smk.params.title)


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
