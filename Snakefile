"""neural-em reproducibility pipeline.

    snakemake --cores 2                                   # the embedded demo (EMD-3488), offline
    snakemake --report results/report.html                # the HTML report of the last run
    snakemake --configfile config/paper.yaml --cores 8 --resources gpu=7   # the study's dataset

Rules are thin: they call the ``neural-em`` command line or small scripts in ``scripts/`` that
call the ``neural_em`` library, where all the science lives and is tested. See docs/workflow.md.
"""

from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

REPO = Path(workflow.basedir)
SCRIPTS = REPO / "scripts"


configfile: str(REPO / "config" / "config.yaml")


# Before any job: a wrong key or value stops here with a message naming it.
validate(config, str(REPO / "config" / "schema.yaml"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/interpolation.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/view.smk"
include: "workflow/rules/deeptracer.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/report.smk"


rule all:
    """The whole study for the configured entries: metrics, tables, figures, HTML summary,
    and each entry's interactive view."""
    input:
        rules.collect.output,
        rules.figures.output,
        rules.summary.output,
        all_views(),
        expand("results/tables/{table}.html", table=list(TABLES)),
    default_target: True
