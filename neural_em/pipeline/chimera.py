"""The study's interpolation experiment on Chimera's maps (molmap and ``vop resample``).

:func:`chimera_experiment` is :func:`neural_em.pipeline.interpolation.interpolation_experiment`
where Chimera made the coarse map, the control and the trilinear resampling: the same error
arithmetic on the control's normalised scale. The workflow's ``interpolation`` rule runs it when
a Chimera command is configured (``scripts/interpolation.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from neural_em.pipeline.interpolation import ErrorStats, build_field
from neural_em.voxelmap import VoxelMap, read_map

logger = logging.getLogger(__name__)


def chimera_experiment(
    coarse: str | os.PathLike | VoxelMap,
    fine: str | os.PathLike | VoxelMap,
    trilinear: str | os.PathLike | VoxelMap,
    *,
    resolution_A: float,
    methods: Sequence[str],
    neural_kwargs: dict[str, Any] | None = None,
    max_eval_points: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The interpolation experiment on Chimera's maps: errors on the control's normalised scale.

    ``coarse`` and ``fine`` (the control) are Chimera's molmap of the model at the resolution
    and at the fine step, ``trilinear`` is Chimera's ``vop resample`` of the coarse map onto the
    control's grid (raw scale); each is a map file or a :class:`VoxelMap` (raw densities). As
    in :func:`interpolation_experiment`: each field is built from the normalised coarse map; its
    densities go back to the coarse map's raw scale and onto the control's normalised scale;
    errors ``predicted - control`` at the control's non-zero voxels and at all of them (or at a
    seeded random subset of ``max_eval_points`` control voxels, the same for every method).
    Chimera's trilinear map stands for ``"trilinear"`` and is normalised like the control.
    """

    def as_map(m: str | os.PathLike | VoxelMap) -> VoxelMap:
        return m if isinstance(m, VoxelMap) else read_map(m)

    coarse_raw, fine_raw = as_map(coarse), as_map(fine)
    coarse_n, control = coarse_raw.normalised(), fine_raw.normalised()
    nc, nf = coarse_n.normalisation, control.normalisation
    assert nc is not None and nf is not None
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
            tri = as_map(trilinear)
            if tri.data.shape != control.data.shape:
                name = tri.source or "the trilinear map"
                raise ValueError(
                    f"{name}: grid {tri.shape_xyz} differs from the control's {control.shape_xyz}"
                )
            pred = nf.to_normalised(tri.data.ravel()[subset])
            build = 0.0
        else:
            field = build_field(method, coarse_n, neural_kwargs=neural_kwargs)
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
        stats: dict[str, Any] = {}
        for name, mask in (("nonzero", nonzero & ok), ("all", ok)):
            acc = ErrorStats()
            acc.update(pred[mask] - truth[mask])
            stats[name] = acc.result()
        stats["points_outside_field"] = int((~ok).sum())
        results[method] = {
            "build_s": build,
            "evaluate_s": time.perf_counter() - t0 - build,
            "common": stats,
            "source": "chimera" if method == "trilinear" else "neural_em",
        }
        logger.info(
            "%s: MAE %.4g (non-zero control voxels)",
            method,
            stats["nonzero"]["mean_abs"] or float("nan"),
        )
    return {
        "experiment": "interpolation",
        "simulator": "chimera",
        "resolution_A": float(resolution_A),
        "coarse": {
            "shape_xyz": list(coarse_n.shape_xyz),
            "voxel_size": coarse_n.voxel_size.tolist(),
        },
        "control": {
            "shape_xyz": list(control.shape_xyz),
            "voxel_size": control.voxel_size.tolist(),
            "n_nonzero": n_nonzero,
        },
        "evaluated_points": "all" if len(subset) == fine_raw.data.size else len(subset),
        "error": "predicted - control",
        "methods": results,
        "skipped": {},
    }
