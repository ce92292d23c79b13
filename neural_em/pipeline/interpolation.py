"""Interpolation experiments: how well does each continuous field predict density between voxels.

Two experiments, as library functions the pipeline and the benchmarks call:

* :func:`interpolation_experiment` (the study's): a map is simulated from a model at
  resolution/3 spacing (Gaussian per atom, :mod:`neural_em.simulate`) and, as the control,
  directly at 0.2 Å on a grid aligned with it (:func:`~neural_em.simulate.aligned_fine_grid`).
  Each method builds a field from the coarse map and is sampled at the control's grid points;
  errors are reported at the control's non-zero voxels (as in the study) and at all of them.
* :func:`neural_em.pipeline.chimera.chimera_experiment` (the study's, with Chimera's maps): the same comparison where
  Chimera's molmap made the coarse map and the control and ``vop resample`` stands for trilinear.
* :func:`heldout_experiment` (for real maps, where no finer truth exists): the sub-grid of
  even voxels ``data[::2, ::2, ::2]`` (voxel size doubled) predicts every other voxel; errors
  at those held-out voxels.

Methods: ``"trilinear"``, ``"fourier"``, ``"spline"`` (classical, instant), ``"learned"`` (a
network trained across maps refines the map 2x, :mod:`neural_em.fields.learned`) and ``"neural"``
(the study's neural map; ``"neural-fast"`` / ``"neural-paper"`` pick a preset). The neural
field comes from :mod:`neural_em.fields.neural`, imported only when asked for; where it is
missing the method is skipped with a note in the result's ``"skipped"``.

Normalisation (interpolation experiment). Each field normalises the coarse map by the study's
rule (negatives to 0, min-max to [0, 1]); its predictions are mapped back to the raw density
scale and then put on the control's normalised scale, i.e. one normalisation (the control's
min-max) for both maps (``"common"``, the headline numbers). Normalising each map by its own
maximum (``"separate"``, reported beside) mixes a scale error into the interpolation error:
the coarse grid misses the sharpest peaks, so its maximum is lower than the control's and
every predicted density is inflated by the ratio of the maxima.

Errors are ``predicted - control`` on that scale: ``min``, ``max`` (signed, as the study
reported), ``mean``, ``mean_abs`` (MAE), ``rmse``, ``max_abs`` and the number of points ``n``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypedDict

import numpy as np

from neural_em.errors import InputError
from neural_em.fields.base import DensityField
from neural_em.fields.kinds import FIELD_KINDS, field_class
from neural_em.simulate import Atoms, read_atoms, simulate_aligned_pair
from neural_em.voxelmap import Normalisation, VoxelMap

logger = logging.getLogger(__name__)

CLASSICAL_METHODS = ("trilinear", "fourier", "spline")
DEFAULT_METHODS = ("trilinear", "fourier", "spline", "neural")
#: Every method: a field kind of the registry, or the neural field with a preset
#: (:data:`neural_em.fields.presets.PRESETS`, not imported here: it needs torch).
METHODS = (*FIELD_KINDS, "neural-fast", "neural-paper")

#: The statistics of one set of errors (:class:`ErrorStats`), each a number or None.
ERROR_STATS = ("n", "min", "max", "mean", "mean_abs", "rmse", "max_abs")
#: The headline errors of a method: its ``RESULT_SCALE`` normalisation, ``RESULT_MASK`` voxels.
RESULT_SCALE = "common"
RESULT_MASK = "nonzero"


class MethodResult(TypedDict, total=False):
    """One method's record in ``methods`` of :func:`interpolation_experiment` (and of
    :func:`~neural_em.pipeline.chimera.chimera_experiment`): ``build_s``, ``evaluate_s``,
    ``field`` (its metadata) and, per normalisation (``"common"``, ``"separate"``), the
    :data:`ERROR_STATS` of each mask (``"nonzero"``, ``"all"``, ``"dense"``)."""

    build_s: float
    evaluate_s: float
    field: dict[str, Any]
    common: dict[str, dict[str, Any]]
    separate: dict[str, dict[str, Any]]


#: Points evaluated per chunk.
CHUNK_POINTS = 1 << 18


# ====================================================================== statistics
class ErrorStats:
    """Running error statistics (float64), updated chunk by chunk."""

    def __init__(self) -> None:
        self.n = 0
        self.sum = 0.0
        self.sum_abs = 0.0
        self.sum_sq = 0.0
        self.min = np.inf
        self.max = -np.inf

    def update(self, err: np.ndarray) -> None:
        """Add the errors ``err`` (any shape) to the statistics."""
        err = np.asarray(err, dtype=np.float64)
        if err.size == 0:
            return
        self.n += err.size
        self.sum += float(err.sum())
        self.sum_abs += float(np.abs(err).sum())
        self.sum_sq += float(np.square(err).sum())
        self.min = min(self.min, float(err.min()))
        self.max = max(self.max, float(err.max()))

    def result(self) -> dict[str, float | int | None]:
        """The statistics (:data:`ERROR_STATS`; None where there are no errors)."""
        if self.n == 0:
            return {
                "n": 0,
                "min": None,
                "max": None,
                "mean": None,
                "mean_abs": None,
                "rmse": None,
                "max_abs": None,
            }
        return {
            "n": self.n,
            "min": self.min,
            "max": self.max,
            "mean": self.sum / self.n,
            "mean_abs": self.sum_abs / self.n,
            "rmse": float(np.sqrt(self.sum_sq / self.n)),
            "max_abs": max(abs(self.min), abs(self.max)),
        }


def error_stats(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float | int | None]:
    """Error statistics of ``predicted - truth`` (any equal shapes) as :class:`ErrorStats`."""
    acc = ErrorStats()
    acc.update(np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64))
    return acc.result()


# ====================================================================== fields
def neural_available() -> tuple[bool, str]:
    """Whether the neural field can be built here, and why not."""
    try:
        from neural_em.fields.neural import NeuralDensityMap  # noqa: F401
    except ImportError as exc:  # module not written yet, or torch missing
        return False, f"neural field unavailable ({type(exc).__name__}: {exc})"
    return True, ""


def build_field(
    method: str,
    vmap: VoxelMap,
    *,
    neural_kwargs: dict[str, Any] | None = None,
    fourier_kwargs: dict[str, Any] | None = None,
    learned_kwargs: dict[str, Any] | None = None,
) -> DensityField:
    """Build the field of ``method`` (one of :data:`METHODS`) over ``vmap`` (kept on its
    normalisation if it has one).

    ``"neural-fast"``/``"neural-paper"`` set the preset; ``neural_kwargs`` go to
    ``NeuralDensityMap.from_voxel_data`` (preset, max_epochs, time_budget_s, seed, devices);
    ``fourier_kwargs`` and ``learned_kwargs`` to those fields (upsampling; weights, tile).
    """
    kind, _, preset = method.partition("-")
    if method not in METHODS:
        raise InputError(f"unknown interpolation method {method!r} (known: {', '.join(METHODS)})")
    cls = field_class(kind)
    if kind == "neural":
        kwargs = dict(neural_kwargs or {})
        if preset:
            kwargs["preset"] = preset
        return cls.from_voxel_data(vmap, **kwargs)
    options = {"fourier": fourier_kwargs, "learned": learned_kwargs}.get(kind)
    return cls(vmap, **(options or {}))


def _check_methods(methods: Sequence[str]) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    out = []
    for m in methods:
        if m not in METHODS:
            raise InputError(f"unknown interpolation method {m!r} (known: {', '.join(METHODS)})")
        if m not in out:
            out.append(m)
    if not out:
        raise InputError("no interpolation method given")
    return out


def _rescale(
    values: np.ndarray, source: Normalisation | None, target: Normalisation | None
) -> np.ndarray:
    """Normalised values of one map's scale on another map's normalised scale (no clipping)."""
    if source is None or target is None or source == target:
        return values
    raw = values.astype(np.float64) * (source.clip_max - source.clip_min) + source.clip_min
    return (raw - target.clip_min) / (target.clip_max - target.clip_min)


def _on_input_scale(field: DensityField, given: VoxelMap, values: np.ndarray) -> np.ndarray:
    """A field's densities on the scale of the map it was built from (``given``, normalised).

    Fields keep the normalisation of a map that has one; a field that normalised it again
    (its record differs) is mapped back through its own record.
    """
    if field.normalisation is None or field.normalisation == given.normalisation:
        return values
    return field.normalisation.to_raw(values)


def _field_densities(field: DensityField, points: np.ndarray) -> np.ndarray:
    """Densities (float64) at points; NaN outside the field's box."""
    out = np.full(len(points), np.nan)
    inside = field.contains(points)
    if inside.any():
        out[inside] = field._densities_fast(points[inside])
    return out


def _flat_chunks(
    n_total: int, subset: np.ndarray | None, chunk: int = CHUNK_POINTS
) -> Iterator[np.ndarray]:
    if subset is None:
        for s in range(0, n_total, chunk):
            yield np.arange(s, min(n_total, s + chunk))
    else:
        for s in range(0, len(subset), chunk):
            yield subset[s : s + chunk]


@dataclasses.dataclass
class _Target:
    """Where a field is evaluated and what it is compared with."""

    origin: np.ndarray
    voxel_size: np.ndarray
    shape_zyx: tuple[int, int, int]
    truth: np.ndarray  # flat, normalised truth at every grid point (C order)
    flat_indices: np.ndarray | None  # subset of flat indices (sorted) or None for all
    masks: dict[str, Callable[[np.ndarray], np.ndarray]]  # name -> (truth chunk -> bool)

    def points(self, flat: np.ndarray) -> np.ndarray:
        z, y, x = np.unravel_index(flat, self.shape_zyx)
        return self.origin + np.stack([x, y, z], axis=1) * self.voxel_size


def _evaluate_on_target(
    field: DensityField, target: _Target, scales: dict[str, Callable[[np.ndarray], np.ndarray]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Errors per scale (name -> prediction transform) and per mask; counts NaN points."""
    acc = {s: {m: ErrorStats() for m in target.masks} for s in scales}
    outside = 0
    n_total = int(np.prod(target.shape_zyx))
    for flat in _flat_chunks(n_total, target.flat_indices):
        pred = _field_densities(field, target.points(flat))
        truth = target.truth[flat].astype(np.float64)
        ok = np.isfinite(pred)
        outside += int((~ok).sum())
        for sname, transform in scales.items():
            err = transform(pred[ok]) - truth[ok]
            for mname, mask in target.masks.items():
                acc[sname][mname].update(err[mask(truth[ok])])
    out = {s: {m: a.result() for m, a in per.items()} for s, per in acc.items()}
    for per in out.values():
        per["points_outside_field"] = outside
    return out


def _run_methods(
    methods: list[str],
    coarse: VoxelMap,
    target: _Target,
    scales_for: Callable[[DensityField], dict[str, Callable]],
    neural_kwargs: dict[str, Any] | None,
    fourier_kwargs: dict[str, Any] | None,
    learned_kwargs: dict[str, Any] | None = None,
) -> tuple[dict, dict]:
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for method in methods:
        if method.startswith("neural"):
            ok, why = neural_available()
            if not ok:
                logger.warning("skipping %s: %s", method, why)
                skipped[method] = why
                continue
        t0 = time.perf_counter()
        field = build_field(
            method,
            coarse,
            neural_kwargs=neural_kwargs,
            fourier_kwargs=fourier_kwargs,
            learned_kwargs=learned_kwargs,
        )
        t1 = time.perf_counter()
        per_scale = _evaluate_on_target(field, target, scales_for(field))
        t2 = time.perf_counter()
        entry: dict[str, Any] = {
            "build_s": t1 - t0,
            "evaluate_s": t2 - t1,
            "field": _json_safe_metadata(field.metadata),
        }
        entry.update(per_scale)
        results[method] = entry
        head = per_scale[next(iter(per_scale))]
        first_mask = next(iter(target.masks))
        logger.info(
            "%s: MAE %.4g, max |err| %.4g (%s), build %.1f s, evaluate %.1f s",
            method,
            head[first_mask]["mean_abs"] or float("nan"),
            head[first_mask]["max_abs"] or float("nan"),
            first_mask,
            t1 - t0,
            t2 - t1,
        )
        del field
    return results, skipped


def _json_safe_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The short, JSON-safe entries of a field's metadata (no NaN, no long lists)."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool | int | str):
            return True
        if isinstance(v, float):
            return bool(np.isfinite(v))
        return False

    out: dict[str, Any] = {}
    for k, v in meta.items():
        if ok(v) or (isinstance(v, list) and len(v) <= 16 and all(ok(x) for x in v)):
            out[str(k)] = v
    return out


def _subset(n_total: int, max_eval_points: int | None, seed: int) -> np.ndarray | None:
    if max_eval_points is None or n_total <= max_eval_points:
        return None
    if max_eval_points < 1:
        raise InputError(f"max_eval_points must be positive, got {max_eval_points}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=int(max_eval_points), replace=False))


def _masks(density_threshold: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    thr = float(density_threshold)
    if not np.isfinite(thr):
        raise InputError(f"density_threshold must be finite, got {density_threshold!r}")
    return {
        "nonzero": lambda t: t > 0.0,
        "all": lambda t: np.ones(t.shape, bool),
        "dense": lambda t: t >= thr,
    }


def _grid_record(vmap: VoxelMap) -> dict[str, Any]:
    return {
        "shape_xyz": list(vmap.shape_xyz),
        "voxel_size": vmap.voxel_size.tolist(),
        "origin": vmap.origin.tolist(),
        "n_voxels": int(vmap.data.size),
    }


# ====================================================================== experiments
def interpolation_experiment(
    model_path: str | os.PathLike | Atoms,
    *,
    resolution_A: float,
    methods: Sequence[str] = DEFAULT_METHODS,
    neural_kwargs: dict[str, Any] | None = None,
    fourier_kwargs: dict[str, Any] | None = None,
    learned_kwargs: dict[str, Any] | None = None,
    fine_step_A: float = 0.2,
    snap_step: bool = False,
    simulate_kwargs: dict[str, Any] | None = None,
    max_eval_points: int | None = None,
    density_threshold: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """The study's interpolation experiment for one model.

    Simulates the coarse map (spacing resolution/3 unless ``simulate_kwargs`` sets
    ``voxel_size_A``) and the control at ``fine_step_A`` on an aligned grid, builds each
    method's field from the normalised coarse map and compares it with the control at every
    control voxel (or a seeded random subset of ``max_eval_points`` of them, the same for every
    method). Returns a JSON-able dict: ``coarse``/``control`` grids, ``normalisation`` (how),
    ``methods[name]`` with ``build_s``, ``evaluate_s`` and errors under ``"common"`` and
    ``"separate"`` normalisation, each for ``"nonzero"`` control voxels (the study's),
    ``"all"`` and ``"dense"`` ones (control >= ``density_threshold``, normalised);
    ``skipped`` methods with the reason.
    """
    methods = _check_methods(methods)
    sim = dict(simulate_kwargs or {})
    atoms = (
        model_path
        if isinstance(model_path, Atoms)
        else read_atoms(
            model_path,
            elements=sim.pop("elements", ("C", "N", "O")),
            atom_names=sim.pop("atom_names", None),
            include_waters=sim.pop("include_waters", False),
            altlocs=sim.pop("altlocs", "first"),
        )
    )
    t0 = time.perf_counter()
    coarse_raw, control_raw, spec = simulate_aligned_pair(
        atoms, resolution_A=resolution_A, fine_step_A=fine_step_A, snap_step=snap_step, **sim
    )
    t_sim = time.perf_counter() - t0
    coarse = coarse_raw.normalised()
    control = control_raw.normalised()
    nc, nf = coarse.normalisation, control.normalisation
    assert nc is not None and nf is not None
    truth = control.data.ravel()
    n_nonzero = int(np.count_nonzero(control.data))  # the "nonzero" mask's voxels
    raw_max, coarse_raw_max = float(control_raw.data.max()), float(coarse_raw.data.max())
    del control_raw, coarse_raw
    target = _Target(
        origin=control.origin,
        voxel_size=control.voxel_size,
        shape_zyx=control.data.shape,
        truth=truth,
        flat_indices=_subset(truth.size, max_eval_points, seed),
        masks=_masks(density_threshold),
    )

    def scales_for(field: DensityField) -> dict[str, Callable]:
        return {
            "common": lambda v: _rescale(_on_input_scale(field, coarse, v), nc, nf),
            "separate": lambda v: _on_input_scale(field, coarse, v),
        }

    results, skipped = _run_methods(
        methods, coarse, target, scales_for, neural_kwargs, fourier_kwargs, learned_kwargs
    )
    return {
        "experiment": "interpolation",
        "model": atoms.source,
        "n_atoms": int(len(atoms.xyz)),
        "resolution_A": float(resolution_A),
        "coarse": _grid_record(coarse),
        "control": {
            **_grid_record(control),
            "ratio": list(spec.ratio),
            "integer_ratio": spec.integer_ratio,
            "n_nonzero": n_nonzero,
            "raw_max": raw_max,
            "coarse_raw_max": coarse_raw_max,
        },
        "density_threshold": float(density_threshold),
        "evaluated_points": "all" if target.flat_indices is None else int(len(target.flat_indices)),
        "normalisation": {
            "common": "control min-max to [0, 1]; predictions mapped to the raw scale and "
            "then onto the control's scale (one normalisation for both maps)",
            "separate": "each map min-max normalised by its own range (the coarse map's "
            "maximum is lower, so predictions are inflated by the ratio)",
        },
        "error": "predicted - control",
        "simulate_s": t_sim,
        "methods": results,
        "skipped": skipped,
    }


def heldout_experiment(
    vmap: VoxelMap,
    *,
    methods: Sequence[str] = CLASSICAL_METHODS,
    neural_kwargs: dict[str, Any] | None = None,
    fourier_kwargs: dict[str, Any] | None = None,
    max_eval_points: int | None = None,
    density_threshold: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Predict every held-out voxel of a map from its even-voxel sub-grid.

    The map is normalised (study's rule) if it is not yet, cropped to an odd number of voxels
    per axis (so the coarse box covers every voxel), and ``coarse = data[::2, ::2, ::2]`` with
    twice the voxel size and the same origin keeps that normalisation. Each method's field of
    the coarse map is evaluated at every voxel with an odd index on some axis; errors
    (``predicted - truth``, normalised scale) at ``"all"`` of them and at the ``"nonzero"``
    ones (truth > 0) and the ``"dense"`` ones (truth >= ``density_threshold``): on masked maps
    most voxels are empty, and methods rank differently inside the molecule than around it.
    ``max_eval_points`` evaluates a seeded random subset of the held-out voxels instead.
    """
    methods = _check_methods(methods)
    if vmap.normalisation is None:
        vmap = vmap.normalised()
    nx, ny, nz = vmap.shape_xyz
    if min(nx, ny, nz) < 5:
        raise InputError(
            f"map of {vmap.shape_xyz} voxels is too small for the held-out test "
            "(at least 5 per axis)",
            vmap.source or None,
        )
    odd = [n if n % 2 else n - 1 for n in (nx, ny, nz)]
    full = vmap.subbox((0, 0, 0), odd)
    coarse = dataclasses.replace(
        full, data=full.data[::2, ::2, ::2].copy(), voxel_size=full.voxel_size * 2.0
    )
    zz, yy, xx = np.meshgrid(*(np.arange(n) % 2 == 1 for n in full.data.shape), indexing="ij")
    held = np.flatnonzero((zz | yy | xx).ravel())
    del zz, yy, xx
    if max_eval_points is not None and len(held) > max_eval_points:
        rng = np.random.default_rng(seed)
        held = np.sort(rng.choice(held, size=int(max_eval_points), replace=False))
    target = _Target(
        origin=full.origin,
        voxel_size=full.voxel_size,
        shape_zyx=full.data.shape,
        truth=full.data.ravel(),
        flat_indices=held,
        masks=_masks(density_threshold),
    )

    def scales_for(field: DensityField) -> dict[str, Callable]:
        return {"normalised": lambda v: _on_input_scale(field, coarse, v)}

    results, skipped = _run_methods(
        methods, coarse, target, scales_for, neural_kwargs, fourier_kwargs
    )
    for entry in results.values():  # one scale only: flatten
        entry.update(entry.pop("normalised"))
    return {
        "experiment": "heldout",
        "map_id": vmap.map_id,
        "source": vmap.source,
        "full": _grid_record(full),
        "coarse": _grid_record(coarse),
        "heldout_voxels": int(len(held)),
        "density_threshold": float(density_threshold),
        "error": "predicted - truth (normalised map)",
        "methods": results,
        "skipped": skipped,
    }
