"""The neural cryo-EM map: one SIREN per region of a voxel map, blended into one field.

The normalised map is tiled into overlapping regions (:mod:`neural_em.fields.regions`); each
region's SIREN maps coordinates scaled to [-1, 1] over the region to the density scaled to
[-1, 1] (``d -> 2d - 1``). The field at a point is the blend ``sum_r w_r(p) d_r(p)`` with a
smooth partition of unity ``w_r``; regions that hold no density carry no network and count as
zero. The gradient is exact (forward-mode through the network) and in density per Å: the chain
rule runs through the per-region scaling and the voxel size, plus the blending weights' own
gradient.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields import siren, training
from neural_em.fields.base import DensityField
from neural_em.fields.fileformat import read_field_file, require, write_field_file
from neural_em.fields.regions import Tiling, region_scaling
from neural_em.voxelmap import Normalisation, VoxelMap, load_normalised

logger = logging.getLogger(__name__)


class NeuralDensityMap(DensityField):
    """A neural field: per-region SIRENs blended over the box of a normalised map.

    ``weights[k]`` ``(R, out, in)`` and ``biases[k]`` ``(R, out)`` hold layer ``k`` of the
    ``R`` trained regions (standard SIREN parameterisation, ω0 = 30), in the order of the
    regions whose training record does not say ``"empty"``.
    """

    kind = "neural"

    def __init__(self, *, tiling: Tiling, weights: Sequence[np.ndarray],
                 biases: Sequence[np.ndarray], preset: str, voxel_size: Any, origin: Any,
                 normalisation: Normalisation | None, map_id: str = "",
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(shape_xyz=tiling.shape_xyz, voxel_size=voxel_size, origin=origin,
                         normalisation=normalisation, map_id=map_id, metadata=metadata)
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
            raise InputError(f"{len(self.trained)} trained regions but weights for "
                             f"{self.weights[0].shape[0]}")
        self._boxes = [boxes[r] for r in self.trained]
        self._tiles = [tiling.tile_index(boxes[r]) for r in self.trained]
        # Folded float64 copies for evaluation.
        w64, b64 = siren.fold_omega([torch.from_numpy(w).double() for w in self.weights],
                                    [torch.from_numpy(b).double() for b in self.biases])
        self._w, self._b = w64, b64

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_voxel_map(cls, path: str | os.PathLike, contour: float | None = None, *,
                       margin_A: float = 5.0, devices: str | Sequence[str] = ("cpu",),
                       preset: str = "fast", max_epochs: int | None = None,
                       time_budget_s: float | None = None, seed: int = 0,
                       checkpoint: str | os.PathLike | None = None, progress: bool = False,
                       max_voxels: int | None = None) -> NeuralDensityMap:
        """Read, normalise and (with ``contour``, a raw density level) crop a map, then fit.

        See :meth:`from_voxel_data` for the training options.
        """
        training.parse_devices(devices)  # refuse bad devices before reading anything
        training.get_preset(preset, max_epochs=max_epochs, time_budget_s=time_budget_s)
        vmap = load_normalised(path, contour=contour, margin_A=margin_A, max_voxels=max_voxels)
        return cls.from_voxel_data(vmap, devices=devices, preset=preset, max_epochs=max_epochs,
                                   time_budget_s=time_budget_s, seed=seed,
                                   checkpoint=checkpoint, progress=progress)

    @classmethod
    def from_voxel_data(cls, data: VoxelMap | np.ndarray, voxel_size: Any = 1.0,
                        origin: Any = 0.0, *, map_id: str = "", margin_A: float = 5.0,
                        devices: str | Sequence[str] = ("cpu",), preset: str = "fast",
                        max_epochs: int | None = None, time_budget_s: float | None = None,
                        seed: int = 0, checkpoint: str | os.PathLike | None = None,
                        progress: bool = False, max_voxels: int | None = None
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
            data = VoxelMap(data=np.asarray(data), voxel_size=voxel_size, origin=origin,
                            map_id=map_id)
        if max_voxels is not None:
            from neural_em.voxelmap import check_voxel_count

            check_voxel_count(data.data.size, "map", max_voxels)
        if data.normalisation is None:
            data = data.normalised()
        cfg = training.get_preset(preset, max_epochs=max_epochs, time_budget_s=time_budget_s)
        devs = training.parse_devices(devices)
        tiling = Tiling.plan(data.shape_xyz, size=cfg.region_size, overlap=cfg.overlap)
        boxes = tiling.boxes()
        geometry = {"shape_xyz": list(data.shape_xyz), "voxel_size": data.voxel_size.tolist(),
                    "origin": data.origin.tolist()}
        start = time.perf_counter()
        fit = training.fit_regions(data.data, boxes, cfg, devices=devs, seed=seed,
                                   checkpoint=checkpoint, progress=progress, geometry=geometry)
        field = cls.from_networks(
            tiling, fit.weights, fit.biases, voxel_size=data.voxel_size, origin=data.origin,
            preset=cfg.name, normalisation=data.normalisation, map_id=data.map_id,
            records=fit.records, devices=fit.devices, seconds=time.perf_counter() - start,
            seed=seed, extra={"preset_settings": cfg.to_dict()})
        field.history = fit.history
        return field

    @classmethod
    def from_networks(cls, tiling: Tiling, weights: Sequence[np.ndarray],
                      biases: Sequence[np.ndarray], *, voxel_size: Any, origin: Any,
                      preset: str = "converted", normalisation: Normalisation | None = None,
                      map_id: str = "", records: list[dict[str, Any]] | None = None,
                      devices: Sequence[str] = (), seconds: float = 0.0, seed: int = 0,
                      extra: dict[str, Any] | None = None) -> NeuralDensityMap:
        """A field from given networks: ``weights[k]`` ``(R, out, in)``, ``biases[k]``
        ``(R, out)`` (standard SIREN parameterisation) for the regions of ``tiling`` whose
        record (``records``, one per region; default: all trained) is not ``"empty"``."""
        widths = [int(weights[0].shape[2])] + [int(w.shape[1]) for w in weights]
        boxes = tiling.boxes()
        if records is None:
            records = [{"loss": None, "max_error": None, "epochs": 0, "best_epoch": 0,
                        "seconds": 0.0, "stop": "converged"} for _ in boxes]
        metadata = {
            "preset": preset,
            "network": {"widths": widths, "activation": "sine", "omega0": siren.OMEGA0,
                        "coordinates": "voxel index scaled to [-1, 1] per region",
                        "targets": "normalised density d scaled to 2d - 1"},
            "tiling": tiling.to_lists(),
            "regions": [{"lo": list(lo), "hi": list(hi)} for lo, hi in boxes],
            "training": _training_summary(records, seconds, seed),
            "devices": list(devices),
            **(extra or {}),
        }
        return cls(tiling=tiling, weights=weights, biases=biases, preset=preset,
                   voxel_size=voxel_size, origin=origin, normalisation=normalisation,
                   map_id=map_id, metadata=metadata)

    # ------------------------------------------------------------------ evaluation
    @property
    def n_parameters(self) -> int:
        return int(sum(w.size for w in self.weights) + sum(b.size for b in self.biases))

    def _blend(self, points: np.ndarray, with_gradient: bool) -> np.ndarray:
        u = (points - self.origin) / self.voxel_size
        out = np.zeros((len(points), 4 if with_gradient else 1))
        tol = 1e-9
        for i, ((lo, hi), tiles) in enumerate(zip(self._boxes, self._tiles, strict=True)):
            lo_a, hi_a = np.asarray(lo), np.asarray(hi)
            inside = np.all((u >= lo_a - tol) & (u <= hi_a - 1 + tol), axis=1)
            if not inside.any():
                continue
            sel = np.flatnonzero(inside)
            us = u[sel]
            w = np.ones(len(sel))
            dw = np.zeros((len(sel), 3))
            parts = [self.tiling.axis_weights(a, tiles[a], us[:, a]) for a in range(3)]
            for a in range(3):
                w = w * parts[a][0]
            if with_gradient:
                for a in range(3):
                    d = parts[a][1].copy()
                    for b in range(3):
                        if b != a:
                            d = d * parts[b][0]
                    dw[:, a] = d
            nz = (w > 0) | np.any(dw != 0, axis=1)
            if not nz.any():
                continue
            sel, us, w, dw = sel[nz], us[nz], w[nz], dw[nz]
            centre, half = region_scaling(lo_a, hi_a)
            x = torch.from_numpy((us - centre) / half).unsqueeze(0)
            ws = [t[i:i + 1] for t in self._w]
            bs = [t[i:i + 1] for t in self._b]
            with torch.no_grad():
                if with_gradient:
                    y, dy = siren.forward_with_jacobian(x, ws, bs)
                    dens = 0.5 * (y[0].numpy() + 1.0)
                    ddens_du = 0.5 * dy[0].numpy() / half
                    out[sel, 1:] += w[:, None] * ddens_du + dw * dens[:, None]
                else:
                    dens = 0.5 * (siren.forward_folded(x, ws, bs)[0, :, 0].numpy() + 1.0)
            out[sel, 0] += w * dens
        if with_gradient:
            out[:, 1:] /= self.voxel_size  # per voxel -> per Å
        return out

    def _evaluate(self, points: np.ndarray) -> np.ndarray:
        return self._blend(points, True).astype(np.float32)

    def _densities_fast(self, points: np.ndarray) -> np.ndarray:
        out = np.full(len(points), np.nan, dtype=np.float32)
        inside = self.contains(points)
        if inside.any():
            out[inside] = self._blend(points[inside], False)[:, 0]
        return out

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

    def save(self, path: str | os.PathLike, *, overwrite: bool = False,
             float16: bool = False) -> Path:
        """Write the field as a ``.neural`` file (safetensors + JSON), atomically."""
        return write_field_file(path, self.file_metadata(), self.tensors(),
                                overwrite=overwrite, float16=float16)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NeuralDensityMap:
        """Load a neural field written by :meth:`save` (never runs code from the file)."""
        header, tensors = read_field_file(path)
        return cls.from_file_contents(header, tensors, path)

    @classmethod
    def from_file_contents(cls, header: dict[str, Any], tensors: dict[str, np.ndarray],
                           path: str | os.PathLike) -> NeuralDensityMap:
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
        if (not isinstance(widths, list) or len(widths) < 2
                or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                           for n in widths) or widths[0] != 3 or widths[-1] != 1):
            raise FieldFormatError("network widths must be a list of positive integers "
                                   "from 3 to 1", path)
        if network.get("omega0", siren.OMEGA0) != siren.OMEGA0:
            raise FieldFormatError(f"network omega0 {network.get('omega0')!r} is not "
                                   f"{siren.OMEGA0}", path)
        try:
            tiling = Tiling.from_lists(shape_xyz, require(header, "tiling", list, path))
        except InputError as exc:
            raise FieldFormatError(f"bad tiling: {exc.message}", path) from exc
        regions = require(header, "regions", list, path)
        boxes = tiling.boxes()
        try:
            stored = [((tuple(int(v) for v in r["lo"]), tuple(int(v) for v in r["hi"])))
                      for r in regions]
        except (KeyError, TypeError, ValueError) as exc:
            raise FieldFormatError("regions must be objects with integer 'lo' and 'hi'",
                                   path) from exc
        if stored != [tuple(b) for b in boxes]:
            raise FieldFormatError("region boxes do not match the tiling", path)
        train = require(header, "training", dict, path)
        records = train.get("regions")
        if not isinstance(records, list) or len(records) != len(boxes) or not all(
                isinstance(r, dict) and r.get("stop") in training.STOP_REASONS
                for r in records):
            raise FieldFormatError("training records missing, of the wrong length or with an "
                                   "unknown stop reason", path)
        n_trained = sum(r["stop"] != "empty" for r in records)
        dims = siren.layer_dims(widths)
        expected = {}
        for k, (n_in, n_out) in enumerate(dims):
            expected[f"w{k}"] = (n_trained, n_out, n_in)
            expected[f"b{k}"] = (n_trained, n_out)
        if set(tensors) != set(expected):
            raise FieldFormatError(
                f"tensors {sorted(tensors)} do not match the network (expected "
                f"{sorted(expected)})", path)
        for name, shape in expected.items():
            arr = tensors[name]
            if arr.dtype.kind != "f":
                raise FieldFormatError(f"tensor {name!r} is {arr.dtype}, not floating", path)
            if tuple(arr.shape) != shape:
                raise FieldFormatError(f"tensor {name!r} has shape {tuple(arr.shape)}, "
                                       f"expected {shape}", path)
            if not np.all(np.isfinite(arr)):
                raise FieldFormatError(f"tensor {name!r} holds NaN or infinite values", path)
        try:
            norm = header.get("normalisation")
            normalisation = None if norm is None else Normalisation.from_dict(norm)
            metadata = {k: header[k] for k in ("preset_settings", "network", "tiling",
                                               "regions", "training", "devices",
                                               "converted_from")
                        if k in header}
            metadata["preset"] = preset
            return cls(tiling=tiling,
                       weights=[tensors[f"w{k}"] for k in range(len(dims))],
                       biases=[tensors[f"b{k}"] for k in range(len(dims))],
                       preset=preset, voxel_size=voxel_size, origin=origin,
                       normalisation=normalisation, map_id=str(header.get("map_id", "")),
                       metadata=metadata)
        except InputError as exc:
            raise FieldFormatError(exc.message, path) from exc
        except (TypeError, ValueError) as exc:
            raise FieldFormatError(f"bad field geometry ({exc})", path) from exc


def _training_summary(records: list[dict[str, Any]], seconds: float, seed: int
                      ) -> dict[str, Any]:
    counts = {reason: 0 for reason in training.STOP_REASONS}
    for rec in records:
        counts[rec["stop"]] += 1
    return {"regions": records, "stop_counts": counts, "seconds": round(seconds, 3),
            "seed": int(seed)}


def fit_report(field: NeuralDensityMap) -> str:
    """A short human summary of a neural field's fit: regions, stop reasons, losses, time."""
    meta = field.metadata
    train = meta.get("training", {})
    records = train.get("regions", [])
    counts = {reason: 0 for reason in training.STOP_REASONS}
    for rec in records:
        counts[rec.get("stop", "epoch_cap")] += 1
    fitted = [r for r in records if r.get("stop") != "empty"]
    losses = np.array([r["loss"] for r in fitted if r.get("loss") is not None], dtype=float)
    errors = np.array([r["max_error"] for r in fitted if r.get("max_error") is not None],
                      dtype=float)
    epochs = np.array([r.get("epochs", 0) for r in fitted], dtype=float)
    widths = meta.get("network", {}).get("widths", [])
    lines = [
        f"neural map {field.map_id or '(no id)'}: preset {field.preset}, network "
        f"{'-'.join(str(w) for w in widths)}, {field.n_parameters} parameters",
        f"regions: {len(records)} ({len(fitted)} trained, {counts['empty']} empty skipped); "
        f"stopped: {counts['converged']} converged, {counts['patience']} patience, "
        f"{counts['epoch_cap']} on the epoch cap, {counts['time_budget']} on the time budget",
    ]
    if len(losses):
        lines.append(
            f"loss (MSE, targets on [-1, 1]): median {np.median(losses):.2e}, "
            f"max {losses.max():.2e}; max error (density) worst region {errors.max():.4f}; "
            f"epochs median {np.median(epochs):.0f}, max {epochs.max():.0f}")
    lines.append(f"training time {train.get('seconds', 0.0):.1f} s on "
                 f"{', '.join(meta.get('devices', ['?']))}")
    return "\n".join(lines)
