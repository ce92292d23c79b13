# A self-contained HTML summary (figures and tables in one file) made by a rule, so the default
# target ends with something to open. Snakemake's own interactive report, with the provenance of
# every file, is made after a run by `snakemake --report results/report.html` (Snakemake cannot
# make its report from inside a run); it holds the same figures and tables (the report() outputs).


localrules:
    summary,
    table_html,


rule table_html:
    """Each CSV table as an HTML page, so the Snakemake report shows it inline."""
    input:
        lambda wildcards: TABLES[wildcards.table],
    output:
        report("results/tables/{table}.html", caption="../report/table_html.rst",
               category="Tables", labels={"table": "{table}"}),
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../../envs/collect.yaml"
    log:
        "logs/table_html/{table}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        title=lambda wildcards: TABLE_TITLES[wildcards.table],
    script:
        "../../scripts/table_html.py"


rule summary:
    """results/summary.html: figures, tables and the run's settings in one page."""
    input:
        metrics="results/metrics.json",
        tables=list(TABLES.values()),
        figures=[f"results/figures/{name}.png" for name in FIGURES],
        views=all_views(),
    output:
        "results/summary.html",
    conda:
        "../../envs/collect.yaml"
    log:
        "logs/summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../../scripts/summary.py"
