"""Rule ``collect``: every metric into results/metrics.json and the CSV tables."""

from typing import Any


def run(smk: Any) -> None:
    from neural_em.pipeline.collect import collect_metrics, write_metrics
    from neural_em.pipeline.tables import write_tables

    metrics = collect_metrics(
        smk.params.manifest,
        graph_fields=list(smk.params.graph_fields),
        graph_methods=list(smk.params.graph_methods),
        interpolation_methods=list(smk.params.interpolation_methods),
        deeptracer=bool(smk.params.deeptracer),
        settings={"config": dict(smk.params.config), "chimera": bool(smk.params.chimera)},
    )
    write_tables(
        metrics,
        {
            name: getattr(smk.output, name)
            for name in ("graph", "atomic", "interpolation", "training", "timings", "graph_methods")
        },
    )
    write_metrics(metrics, smk.output.metrics)


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
