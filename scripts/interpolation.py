"""Rule ``interpolation``: the study's interpolation experiment for one entry.

Library path: ``neural_em.interpolation.interpolation_experiment`` simulates the coarse map
(resolution/3) and the 0.2 Å control on an aligned grid and compares each method's field with
the control. Chimera path (the rule gives ``coarse``, ``fine`` and ``trilinear`` maps made by
Chimera's molmap and ``vop resample``): the same comparison on Chimera's maps, Chimera's own
resampling standing for trilinear. Neural fits run inside a GPU slot. Writes one JSON file.
"""

import json
import logging
import os
import time
from typing import Any

import numpy as np

from neural_em.atomic import atomic_write_text

log = logging.getLogger("neural_em.workflow.interpolation")


def chimera_experiment(coarse_path: str, fine_path: str, trilinear_path: str, *,
                       resolution_A: float, methods: list[str],
                       neural_kwargs: dict[str, Any] | None = None,
                       max_eval_points: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Errors of each method on Chimera's maps, on the control's normalised scale.

    As in the library's experiment: each field is built from the normalised coarse map; its
    densities go back to the coarse map's raw scale and onto the control's normalised scale;
    errors ``predicted - control`` at the control's non-zero voxels and at all of them.
    Chimera's trilinear map (raw scale, on the control's grid) is normalised like the control.
    """
    from neural_em.interpolation import ErrorStats, build_field
    from neural_em.voxelmap import read_map

    coarse_raw, fine_raw = read_map(coarse_path), read_map(fine_path)
    coarse, control = coarse_raw.normalised(), fine_raw.normalised()
    nc, nf = coarse.normalisation, control.normalisation
    truth = control.data.ravel().astype(np.float64)
    nonzero = fine_raw.data.ravel() > 0
    n_nonzero = int(nonzero.sum())
    subset = np.arange(truth.size)
    if max_eval_points is not None and truth.size > max_eval_points:
        rng = np.random.default_rng(seed)
        subset = np.sort(rng.choice(truth.size, size=int(max_eval_points), replace=False))
    truth, nonzero = truth[subset], nonzero[subset]
    results: dict[str, Any] = {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "trilinear":
            tri = read_map(trilinear_path)
            if tri.data.shape != control.data.shape:
                raise ValueError(f"{trilinear_path}: grid {tri.shape_xyz} differs from the "
                                 f"control's {control.shape_xyz}")
            pred = nf.to_normalised(tri.data.ravel()[subset])
            build = 0.0
        else:
            field = build_field(method, coarse, neural_kwargs=neural_kwargs)
            build = time.perf_counter() - t0
            z, y, x = np.unravel_index(subset, control.data.shape)
            points = control.origin + np.stack([x, y, z], axis=1) * control.voxel_size
            values = field.get_densities(points).astype(np.float64)
            if field.normalisation is not None and field.normalisation != nc:
                values = field.normalisation.to_raw(values)
            else:
                values = nc.to_raw(values)
            pred = (values - nf.clip_min) / (nf.clip_max - nf.clip_min)
        ok = np.isfinite(pred)
        stats = {}
        for name, mask in (("nonzero", nonzero & ok), ("all", ok)):
            acc = ErrorStats()
            acc.update(pred[mask] - truth[mask])
            stats[name] = acc.result()
        stats["points_outside_field"] = int((~ok).sum())
        results[method] = {"build_s": build, "evaluate_s": time.perf_counter() - t0 - build,
                           "common": stats, "source": "chimera" if method == "trilinear"
                           else "neural_em"}
        log.info("%s: MAE %.4g (non-zero control voxels)", method,
                 stats["nonzero"]["mean_abs"] or float("nan"))
    return {"experiment": "interpolation", "simulator": "chimera",
            "resolution_A": float(resolution_A),
            "coarse": {"shape_xyz": list(coarse.shape_xyz),
                       "voxel_size": coarse.voxel_size.tolist()},
            "control": {"shape_xyz": list(control.shape_xyz),
                        "voxel_size": control.voxel_size.tolist(),
                        "n_nonzero": n_nonzero},
            "evaluated_points": "all" if len(subset) == fine_raw.data.size else len(subset),
            "error": "predicted - control", "methods": results, "skipped": {}}


def run(smk: Any) -> None:
    from neural_em.interpolation import interpolation_experiment

    params = smk.params
    methods = list(params.methods)
    kwargs = dict(params.neural_kwargs)
    start = time.time()

    def experiment(device: str) -> dict[str, Any]:
        nk = {**kwargs, "devices": (device,)}
        if params.chimera:
            return chimera_experiment(smk.input.coarse, smk.input.fine, smk.input.trilinear,
                                      resolution_A=float(params.resolution), methods=methods,
                                      neural_kwargs=nk, max_eval_points=params.max_eval_points)
        return interpolation_experiment(smk.input.model, resolution_A=float(params.resolution),
                                        methods=methods, neural_kwargs=nk,
                                        fine_step_A=float(params.fine_step_A),
                                        max_eval_points=params.max_eval_points)

    os.environ.setdefault("OMP_NUM_THREADS", str(smk.threads))
    try:
        import torch

        torch.set_num_threads(max(1, int(smk.threads)))
    except ImportError:
        pass
    if any(m.startswith("neural") for m in methods):
        from neural_em.pipeline.gpu_slots import gpu_slot

        with gpu_slot() as device:
            log.info("neural fits on %s (CUDA_VISIBLE_DEVICES=%s)", device,
                     os.environ.get("CUDA_VISIBLE_DEVICES"))
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
