"""Rule ``evaluate_deeptracer``: a predicted model's C-alpha atoms against the deposited model.

The study's "DeepTracer % matching" and "DeepTracer RMSD": the predicted C-alphas are treated
as nodes and evaluated like a density graph (one-to-one within 3 Å, greedy by distance).
"""

import json
from typing import Any


def run(smk: Any) -> None:
    from neural_em.atomic import atomic_write_text
    from neural_em.graph.evaluate import evaluate_points
    from neural_em.models import read_ca

    predicted = read_ca(smk.input.predicted)
    metrics = evaluate_points(predicted, smk.input.model)
    metrics["predicted_model"] = str(smk.input.predicted)
    atomic_write_text(smk.output[0], json.dumps(metrics, indent=2, default=str) + "\n")


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
