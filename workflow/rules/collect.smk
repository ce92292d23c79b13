# Every metric into one JSON (results/metrics.json) and tables with the study's columns plus
# this project's (spline baseline, coverage, nodes per C-alpha, times, devices, file sizes), and
# the figures (PNG and SVG) beside the study's published results where reference_dir has them.

FIGURES = ["training_time", "file_size", "graph_metrics", "graph_methods", "interpolation_error"]
TABLES = {
    "graph": "results/graph_evaluation.csv",
    "atomic": "results/atomic_evaluation.csv",
    "interpolation": "results/interpolation_evaluation.csv",
    "training": "results/training_regions.csv",
    "timings": "results/timings.csv",
    "graph_methods": "results/graph_methods.csv",
}

TABLE_TITLES = {
    "graph": "Density graphs against the deposited model (per map)",
    "atomic": "Atom-level graph metrics (maps better than 2 Å)",
    "interpolation": "Interpolation errors against the 0.2 Å control (per model)",
    "training": "Neural map training per region",
    "timings": "Job times and peak memory",
    "graph_methods": "Graph methods side by side (per map, method and field)",
}


localrules:
    collect,
    figures,


rule collect:
    """Gather the per-entry records into metrics.json and the CSV tables."""
    input:
        entries="results/dataset/entries.csv",
        files=all_entry_files(),
    output:
        metrics="results/metrics.json",
        graph=report(TABLES["graph"], caption="../report/graph_table.rst",
                     category="Data (CSV)", labels={"table": "graph evaluation"}),
        atomic=report(TABLES["atomic"], caption="../report/atomic_table.rst",
                      category="Data (CSV)", labels={"table": "atomic evaluation"}),
        interpolation=report(TABLES["interpolation"], caption="../report/interp_table.rst",
                             category="Data (CSV)", labels={"table": "interpolation evaluation"}),
        training=report(TABLES["training"], caption="../report/training_table.rst",
                        category="Data (CSV)", labels={"table": "training per region"}),
        timings=report(TABLES["timings"], caption="../report/timings_table.rst",
                       category="Data (CSV)", labels={"table": "timings"}),
        graph_methods=report(TABLES["graph_methods"],
                             caption="../report/graph_methods_table.rst",
                             category="Data (CSV)", labels={"table": "graph methods"}),
    params:
        manifest=manifest(),
        graph_fields=GRAPH_FIELDS,
        graph_methods=GRAPH_METHODS,
        interpolation_methods=INTERP_METHODS if INTERP_ON else [],
        deeptracer=bool(DEEPTRACER),
        chimera=bool(CHIMERA),
        config=config,
    conda:
        "../../envs/collect.yaml"
    log:
        "logs/collect.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../../scripts/collect.py"


rule figures:
    """The study's figures, ours beside theirs (PNG for reading, SVG for print)."""
    input:
        metrics="results/metrics.json",
        reference=reference_files(),
    output:
        png=[report(f"results/figures/{name}.png", caption=f"../report/{name}.rst",
                    category="Figures", labels={"figure": name.replace("_", " ")})
             for name in FIGURES],
        svg=[f"results/figures/{name}.svg" for name in FIGURES],
    params:
        reference_dir=reference_dir,
        names=FIGURES,
    conda:
        "../../envs/collect.yaml"
    log:
        "logs/figures.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../../scripts/figures.py"
