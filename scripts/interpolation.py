"""Rule ``interpolation``: the study's interpolation experiment for one entry.

Library path: ``neural_em.pipeline.interpolation.interpolation_experiment`` simulates the
coarse map (resolution/3) and the 0.2 Å control on an aligned grid and compares each method's
field with the control. Chimera path (the rule gives ``coarse``, ``fine`` and ``trilinear`` maps
made by Chimera's molmap and ``vop resample``): ``chimera_experiment``, the same comparison on
Chimera's maps, Chimera's own resampling standing for trilinear. Neural fits run inside a GPU
slot. Writes one JSON file.
"""

import json
import logging
import os
import time
from typing import Any

from neural_em.atomic import atomic_write_text

log = logging.getLogger("interpolation")  # the rule's name


def run(smk: Any) -> None:
    from neural_em.pipeline.chimera import chimera_experiment
    from neural_em.pipeline.interpolation import interpolation_experiment

    params = smk.params
    methods = list(params.methods)
    kwargs = dict(params.neural_kwargs)
    start = time.time()

    def experiment(device: str) -> dict[str, Any]:
        nk = {**kwargs, "devices": (device,)}
        if params.chimera:
            return chimera_experiment(
                smk.input.coarse,
                smk.input.fine,
                smk.input.trilinear,
                resolution_A=float(params.resolution),
                methods=methods,
                neural_kwargs=nk,
                max_eval_points=params.max_eval_points,
            )
        return interpolation_experiment(
            smk.input.model,
            resolution_A=float(params.resolution),
            methods=methods,
            neural_kwargs=nk,
            fine_step_A=float(params.fine_step_A),
            max_eval_points=params.max_eval_points,
        )

    os.environ.setdefault("OMP_NUM_THREADS", str(smk.threads))
    try:
        import torch

        torch.set_num_threads(max(1, int(smk.threads)))
    except ImportError:
        pass
    if any(m.startswith("neural") for m in methods):
        from neural_em.pipeline.gpu_slots import gpu_slot

        with gpu_slot() as device:
            log.info(
                "neural fits on %s (CUDA_VISIBLE_DEVICES=%s)",
                device,
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
            result = experiment(device)
    else:
        device = "cpu"
        result = experiment(device)
    result["device"] = device
    result["wall_s"] = time.time() - start
    result["neural_kwargs"] = kwargs
    atomic_write_text(smk.output[0], json.dumps(result, indent=2, allow_nan=False) + "\n")


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
