"""The neural cryo-EM map: one SIREN per region of a voxel map, blended into one field.

The normalised map is tiled into overlapping regions (:mod:`neural_em.fields.regions`); each
region's SIREN maps coordinates scaled to [-1, 1] over the region to the density scaled to
[-1, 1] (``d -> 2d - 1``). The field at a point is the blend ``sum_r w_r(p) d_r(p)`` with a
smooth partition of unity ``w_r``; regions that hold no density carry no network and count as
zero. The gradient is exact (reverse mode through the network) and in density per Å: the chain
rule runs through the per-region scaling and the voxel size, plus the blending weights' own
gradient.

Evaluation is the engine of :mod:`neural_em.fields.neural_eval` (docs/neural-eval.md): each
point's regions come straight from the tiling, point-region pairs are run as one batched
float32 call, grids region by region on their sub-blocks of grid points.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields import presets, siren, training
from neural_em.fields.base import DensityField
from neural_em.fields.fileformat import require
from neural_em.fields.neural_eval import NeuralEvaluation
from neural_em.fields.records import (
    STOP_REASONS,
    RegionRecord,
    read_region_records,
    training_summary,
)
from neural_em.fields.regions import Tiling
from neural_em.voxelmap import Normalisation, VoxelMap, load_normalised

logger = logging.getLogger(__name__)


class NeuralDensityMap(NeuralEvaluation, DensityField):
    """A neural field: per-region SIRENs blended over the box of a normalised map.

    ``weights[k]`` ``(R, out, in)`` and ``biases[k]`` ``(R, out)`` hold layer ``k`` of the
    ``R`` trained regions (standard SIREN parameterisation, ω0 = 30), in the order of the
    regions whose training record does not say ``"empty"``.
    """

    kind = "neural"
    trained = True

    def __init__(
        self,
        *,
        tiling: Tiling,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        preset: str,
        voxel_size: Any,
        origin: Any,
        normalisation: Normalisation | None,
        map_id: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            shape_xyz=tiling.shape_xyz,
            voxel_size=voxel_size,
            origin=origin,
            normalisation=normalisation,
            map_id=map_id,
            metadata=metadata,
        )
        self.tiling = tiling
        self.preset = preset
        self.weights = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.ascontiguousarray(b, dtype=np.float32) for b in biases]
        boxes = tiling.boxes()
        records = self.metadata.get("training", {}).get("regions")
        if records is None:
            records = [{"stop": "converged"}] * len(boxes)
        self.trained = [r for r, rec in enumerate(records) if rec.get("stop") != "empty"]
        if len(self.trained) != (self.weights[0].shape[0] if self.weights else 0):
            raise InputError(
                f"{len(self.trained)} trained regions but weights for {self.weights[0].shape[0]}"
            )
        beta = self.metadata.get("network", {}).get("softplus_beta")
        if beta is not None and not (
            isinstance(beta, int | float)
            and not isinstance(beta, bool)
            and math.isfinite(beta)
            and beta > 0
        ):
            raise InputError(f"network softplus_beta must be a positive number, got {beta!r}")
        #: β of the softplus output (density = softplus_β((y + 1) / 2)); None: linear.
        self.softplus_beta = None if beta is None else float(beta)
        self._boxes = [boxes[r] for r in self.trained]
        self._tiles = [tiling.tile_index(boxes[r]) for r in self.trained]
        # Folded float64 copies for evaluation.
        w64, b64 = siren.fold_omega(
            [torch.from_numpy(w).double() for w in self.weights],
            [torch.from_numpy(b).double() for b in self.biases],
        )
        self._w, self._b = w64, b64
        self._setup_fast()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_voxel_map(
        cls,
        path: str | os.PathLike,
        contour: float | None = None,
        *,
        margin_A: float = 5.0,
        devices: str | Sequence[str] = ("cpu",),
        preset: str = "fast",
        max_epochs: int | None = None,
        time_budget_s: float | None = None,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        progress: bool = False,
        max_voxels: int | None = None,
    ) -> NeuralDensityMap:
        """Read, normalise and (with ``contour``, a raw density level) crop a map, then fit.

        See :meth:`from_voxel_data` for the training options.
        """
        presets.parse_devices(devices)  # refuse bad devices before reading anything
        presets.get_preset(preset, max_epochs=max_epochs, time_budget_s=time_budget_s)
        vmap = load_normalised(path, contour=contour, margin_A=margin_A, max_voxels=max_voxels)
        return cls.from_voxel_data(
            vmap,
            devices=devices,
            preset=preset,
            max_epochs=max_epochs,
            time_budget_s=time_budget_s,
            seed=seed,
            checkpoint=checkpoint,
            progress=progress,
        )

    @classmethod
    def from_voxel_data(
        cls,
        data: VoxelMap | np.ndarray,
        voxel_size: Any = 1.0,
        origin: Any = 0.0,
        *,
        map_id: str = "",
        margin_A: float = 5.0,
        devices: str | Sequence[str] = ("cpu",),
        preset: str = "fast",
        max_epochs: int | None = None,
        time_budget_s: float | None = None,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        progress: bool = False,
        max_voxels: int | None = None,
    ) -> NeuralDensityMap:
        """Fit a neural field to a :class:`VoxelMap` or an array ``(nz, ny, nx)``.

        The map is normalised here if it is not already. ``preset``: "fast" or "paper";
        ``max_epochs`` / ``time_budget_s`` override the preset's epoch cap per region and
        time budget per group of regions (seconds); ``devices``: "cpu", "cuda", "cuda:N" or a
        list (several GPUs share the regions); ``checkpoint``: a file where finished and
        in-progress groups are saved, so a rerun with the same arguments resumes. With a fixed
        ``seed`` CPU fits are repeatable. (``margin_A`` and ``max_voxels`` only apply to
        :meth:`from_voxel_map`; accepted here for a uniform signature.)
        """
        del margin_A
        if not isinstance(data, VoxelMap):
            data = VoxelMap(
                data=np.asarray(data), voxel_size=voxel_size, origin=origin, map_id=map_id
            )
        if max_voxels is not None:
            from neural_em.mrcread import check_voxel_count

            check_voxel_count(data.data.size, "map", max_voxels)
        if data.normalisation is None:
            data = data.normalised()
        cfg = presets.get_preset(preset, max_epochs=max_epochs, time_budget_s=time_budget_s)
        devs = presets.parse_devices(devices)
        tiling = Tiling.plan(data.shape_xyz, size=cfg.region_size, overlap=cfg.overlap)
        boxes = tiling.boxes()
        geometry = {
            "shape_xyz": list(data.shape_xyz),
            "voxel_size": data.voxel_size.tolist(),
            "origin": data.origin.tolist(),
        }
        start = time.perf_counter()
        fit = training.fit_regions(
            data.data,
            boxes,
            cfg,
            devices=devs,
            seed=seed,
            checkpoint=checkpoint,
            progress=progress,
            geometry=geometry,
        )
        field = cls.from_networks(
            tiling,
            fit.weights,
            fit.biases,
            voxel_size=data.voxel_size,
            origin=data.origin,
            preset=cfg.name,
            normalisation=data.normalisation,
            map_id=data.map_id,
            records=fit.records,
            devices=fit.devices,
            seconds=time.perf_counter() - start,
            seed=seed,
            softplus_beta=cfg.softplus_beta,
            extra={"preset_settings": cfg.to_dict()},
        )
        field.history = fit.history
        return field

    @classmethod
    def from_networks(
        cls,
        tiling: Tiling,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        *,
        voxel_size: Any,
        origin: Any,
        preset: str = "converted",
        normalisation: Normalisation | None = None,
        map_id: str = "",
        records: list[dict[str, Any]] | None = None,
        devices: Sequence[str] = (),
        seconds: float = 0.0,
        seed: int = 0,
        softplus_beta: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> NeuralDensityMap:
        """A field from given networks: ``weights[k]`` ``(R, out, in)``, ``biases[k]``
        ``(R, out)`` (standard SIREN parameterisation) for the regions of ``tiling`` whose
        record (``records``, one per region; default: all trained) is not ``"empty"``;
        ``softplus_beta``: the output transform (:func:`siren.output_density`)."""
        widths = [int(weights[0].shape[2])] + [int(w.shape[1]) for w in weights]
        boxes = tiling.boxes()
        if records is None:
            records = [RegionRecord.untrained().to_dict() for _ in boxes]
        metadata = {
            "preset": preset,
            "network": {
                "widths": widths,
                "activation": "sine",
                "omega0": siren.OMEGA0,
                "coordinates": "voxel index scaled to [-1, 1] per region",
                "targets": "normalised density d scaled to 2d - 1",
                "output": (
                    "density = (y + 1) / 2"
                    if softplus_beta is None
                    else "density = softplus_beta((y + 1) / 2)"
                ),
                "softplus_beta": softplus_beta,
            },
            "tiling": tiling.to_lists(),
            "regions": [{"lo": list(lo), "hi": list(hi)} for lo, hi in boxes],
            "training": training_summary(records, seconds, seed),
            "devices": list(devices),
            **(extra or {}),
        }
        return cls(
            tiling=tiling,
            weights=weights,
            biases=biases,
            preset=preset,
            voxel_size=voxel_size,
            origin=origin,
            normalisation=normalisation,
            map_id=map_id,
            metadata=metadata,
        )

    # ------------------------------------------------------------------ evaluation
    @property
    def n_parameters(self) -> int:
        return int(sum(w.size for w in self.weights) + sum(b.size for b in self.biases))

    # ------------------------------------------------------------------ files
    def file_metadata(self) -> dict[str, Any]:
        """The header saved with the field. With ``NEURAL_EM_REPRODUCIBLE=1`` in the
        environment the wall-clock timings are written as 0, so that two fits with the same
        seed give byte-identical files (timings are the only thing that differs)."""
        meta = super().file_metadata()
        meta["preset"] = self.preset
        if os.environ.get("NEURAL_EM_REPRODUCIBLE", "") not in ("", "0"):
            train = dict(meta.get("training", {}))
            train["seconds"] = 0.0
            train["regions"] = [{**r, "seconds": 0.0} for r in train.get("regions", [])]
            meta["training"] = train
        return meta

    def tensors(self) -> dict[str, np.ndarray]:
        """The network tensors as saved: ``w{k}`` ``(R, out, in)``, ``b{k}`` ``(R, out)``."""
        out = {}
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"w{k}"] = w
            out[f"b{k}"] = b
        return out

    @classmethod
    # Complexity over 15: strict reader: one check per header field, in file order.
    def from_file_contents(  # noqa: C901
        cls, header: dict[str, Any], tensors: dict[str, np.ndarray], path: str | os.PathLike
    ) -> NeuralDensityMap:
        """Build from a file's header and tensors, checking every type and shape; raises
        :class:`FieldFormatError` (one line) for anything inconsistent."""
        if header.get("kind") != cls.kind:
            raise FieldFormatError(f"field kind is {header.get('kind')!r}, not 'neural'", path)
        shape_xyz = require(header, "shape_xyz", list, path)
        voxel_size = require(header, "voxel_size", list, path)
        origin = require(header, "origin", list, path)
        preset = require(header, "preset", str, path)
        network = require(header, "network", dict, path)
        widths = network.get("widths")
        if (
            not isinstance(widths, list)
            or len(widths) < 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in widths)
            or widths[0] != 3
            or widths[-1] != 1
        ):
            raise FieldFormatError(
                "network widths must be a list of positive integers from 3 to 1", path
            )
        if network.get("omega0", siren.OMEGA0) != siren.OMEGA0:
            raise FieldFormatError(
                f"network omega0 {network.get('omega0')!r} is not {siren.OMEGA0}", path
            )
        try:
            tiling = Tiling.from_lists(shape_xyz, require(header, "tiling", list, path))
        except InputError as exc:
            raise FieldFormatError(f"bad tiling: {exc.message}", path) from exc
        regions = require(header, "regions", list, path)
        boxes = tiling.boxes()
        try:
            stored = [
                ((tuple(int(v) for v in r["lo"]), tuple(int(v) for v in r["hi"]))) for r in regions
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise FieldFormatError(
                "regions must be objects with integer 'lo' and 'hi'", path
            ) from exc
        if stored != [tuple(b) for b in boxes]:
            raise FieldFormatError("region boxes do not match the tiling", path)
        train = require(header, "training", dict, path)
        try:
            records = read_region_records(train, len(boxes))
        except FieldFormatError as exc:
            raise FieldFormatError(exc.message, path) from exc
        n_trained = sum(not r.skipped for r in records)
        dims = siren.layer_dims(widths)
        expected = {}
        for k, (n_in, n_out) in enumerate(dims):
            expected[f"w{k}"] = (n_trained, n_out, n_in)
            expected[f"b{k}"] = (n_trained, n_out)
        if set(tensors) != set(expected):
            raise FieldFormatError(
                f"tensors {sorted(tensors)} do not match the network (expected {sorted(expected)})",
                path,
            )
        for name, shape in expected.items():
            arr = tensors[name]
            if arr.dtype.kind != "f":
                raise FieldFormatError(f"tensor {name!r} is {arr.dtype}, not floating", path)
            if tuple(arr.shape) != shape:
                raise FieldFormatError(
                    f"tensor {name!r} has shape {tuple(arr.shape)}, expected {shape}", path
                )
            if not np.all(np.isfinite(arr)):
                raise FieldFormatError(f"tensor {name!r} holds NaN or infinite values", path)
        try:
            norm = header.get("normalisation")
            normalisation = None if norm is None else Normalisation.from_dict(norm)
            metadata = {
                k: header[k]
                for k in (
                    "preset_settings",
                    "network",
                    "tiling",
                    "regions",
                    "training",
                    "devices",
                    "converted_from",
                )
                if k in header
            }
            metadata["preset"] = preset
            return cls(
                tiling=tiling,
                weights=[tensors[f"w{k}"] for k in range(len(dims))],
                biases=[tensors[f"b{k}"] for k in range(len(dims))],
                preset=preset,
                voxel_size=voxel_size,
                origin=origin,
                normalisation=normalisation,
                map_id=str(header.get("map_id", "")),
                metadata=metadata,
            )
        except InputError as exc:
            raise FieldFormatError(exc.message, path) from exc
        except (TypeError, ValueError) as exc:
            raise FieldFormatError(f"bad field geometry ({exc})", path) from exc


def fit_report(field: NeuralDensityMap) -> str:
    """A short human summary of a neural field's fit: regions, stop reasons, losses, time."""
    meta = field.metadata
    train = meta.get("training", {})
    records = train.get("regions", [])
    counts = {reason: 0 for reason in STOP_REASONS}
    for rec in records:
        counts[rec.get("stop", "epoch_cap")] += 1
    fitted = [r for r in records if r.get("stop") != "empty"]
    losses = np.array([r["loss"] for r in fitted if r.get("loss") is not None], dtype=float)
    errors = np.array(
        [r["max_error"] for r in fitted if r.get("max_error") is not None], dtype=float
    )
    epochs = np.array([r.get("epochs", 0) for r in fitted], dtype=float)
    widths = meta.get("network", {}).get("widths", [])
    lines = [
        f"neural map {field.map_id or '(no id)'}: preset {field.preset}, network "
        f"{'-'.join(str(w) for w in widths)}"
        + (
            f" with a softplus output (β {field.softplus_beta:g})"
            if field.softplus_beta is not None
            else ""
        )
        + f", {field.n_parameters} parameters",
        f"regions: {len(records)} ({len(fitted)} trained, {counts['empty']} empty skipped); "
        f"stopped: {counts['converged']} converged, {counts['patience']} patience, "
        f"{counts['epoch_cap']} on the epoch cap, {counts['time_budget']} on the time budget",
    ]
    if len(losses):
        lines.append(
            f"loss (MSE, targets on [-1, 1]): median {np.median(losses):.2e}, "
            f"max {losses.max():.2e}; max error (density) worst region {errors.max():.4f}; "
            f"epochs median {np.median(epochs):.0f}, max {epochs.max():.0f}"
        )
    lines.append(
        f"training time {train.get('seconds', 0.0):.1f} s on "
        f"{', '.join(meta.get('devices', ['?']))}"
    )
    return "\n".join(lines)
