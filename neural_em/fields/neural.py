"""The neural cryo-EM map: one SIREN per region of a voxel map, blended into one field.

The normalised map is tiled into overlapping regions (:mod:`neural_em.fields.regions`); each
region's SIREN maps coordinates scaled to [-1, 1] over the region to the density scaled to
[-1, 1] (``d -> 2d - 1``). The field at a point is the blend ``sum_r w_r(p) d_r(p)`` with a
smooth partition of unity ``w_r``; regions that hold no density carry no network and count as
zero. The gradient is exact (reverse mode through the network) and in density per Å: the chain
rule runs through the per-region scaling and the voxel size, plus the blending weights' own
gradient.

Evaluation (docs/neural-eval.md): each point's regions come straight from the tiling (at most
two tiles per axis), point-region pairs are grouped by region and run as one batched float32
call (stacked BLAS products over blocks of pairs); grids are evaluated region by region on
their sub-blocks of grid points. ``_blend_reference`` keeps the plain formula for the tests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields import siren, training
from neural_em.fields.base import DensityField
from neural_em.fields.fileformat import require
from neural_em.fields.records import (
    STOP_REASONS,
    RegionRecord,
    read_region_records,
    training_summary,
)
from neural_em.fields.regions import Tiling, region_scaling, smootherstep
from neural_em.voxelmap import Normalisation, VoxelMap, load_normalised

logger = logging.getLogger(__name__)

#: Points a region's network evaluates per block of the batched call (a region's last block
#: is padded): small enough that padding costs little, large enough for efficient products.
_BLOCK = 256
#: Points evaluated per piece by the fast blend (bounds the memory of the batched call).
_PIECE = 32768
#: Most point-region pairs per batched network call on a grid slab (bounds its memory).
_GRID_PAIRS = 1 << 17
#: Fewest point-region pairs worth splitting over threads.
_PARALLEL_PAIRS = 4096
_BLAS_CONTROLLER: Any = None
_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    """A process-wide pool of :func:`_eval_threads` threads (made again after a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(_eval_threads(),
                                                     thread_name_prefix="neural-eval"))
        return _POOL[1]


def _eval_threads() -> int:
    """Threads for evaluating networks: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def _single_threaded_blas() -> Any:
    """A context in which BLAS runs single-threaded (threadpoolctl; a no-op without it)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _BLAS_CONTROLLER = False
    if _BLAS_CONTROLLER is False:
        return contextlib.nullcontext()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


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
        beta = self.metadata.get("network", {}).get("softplus_beta")
        if beta is not None and not (isinstance(beta, int | float) and not isinstance(beta, bool)
                                     and math.isfinite(beta) and beta > 0):
            raise InputError(f"network softplus_beta must be a positive number, got {beta!r}")
        #: β of the softplus output (density = softplus_β((y + 1) / 2)); None: linear.
        self.softplus_beta = None if beta is None else float(beta)
        self._boxes = [boxes[r] for r in self.trained]
        self._tiles = [tiling.tile_index(boxes[r]) for r in self.trained]
        # Folded float64 copies for evaluation.
        w64, b64 = siren.fold_omega([torch.from_numpy(w).double() for w in self.weights],
                                    [torch.from_numpy(b).double() for b in self.biases])
        self._w, self._b = w64, b64
        self._setup_fast()

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
            seed=seed, softplus_beta=cfg.softplus_beta,
            extra={"preset_settings": cfg.to_dict()})
        field.history = fit.history
        return field

    @classmethod
    def from_networks(cls, tiling: Tiling, weights: Sequence[np.ndarray],
                      biases: Sequence[np.ndarray], *, voxel_size: Any, origin: Any,
                      preset: str = "converted", normalisation: Normalisation | None = None,
                      map_id: str = "", records: list[dict[str, Any]] | None = None,
                      devices: Sequence[str] = (), seconds: float = 0.0, seed: int = 0,
                      softplus_beta: float | None = None,
                      extra: dict[str, Any] | None = None) -> NeuralDensityMap:
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
            "network": {"widths": widths, "activation": "sine", "omega0": siren.OMEGA0,
                        "coordinates": "voxel index scaled to [-1, 1] per region",
                        "targets": "normalised density d scaled to 2d - 1",
                        "output": ("density = (y + 1) / 2" if softplus_beta is None else
                                   "density = softplus_beta((y + 1) / 2)"),
                        "softplus_beta": softplus_beta},
            "tiling": tiling.to_lists(),
            "regions": [{"lo": list(lo), "hi": list(hi)} for lo, hi in boxes],
            "training": training_summary(records, seconds, seed),
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

    def _setup_fast(self) -> None:
        """Tables for the fast evaluation: per-region scaling, the trained index of every
        region, per-axis tile ramps (networks as arrays: :meth:`_net_tables`)."""
        self._tables: dict[np.dtype, tuple[list[np.ndarray], ...]] = {}
        n_regions = len(self.tiling.boxes())
        self._trained_of = np.full(n_regions, -1, dtype=np.int64)
        self._trained_of[self.trained] = np.arange(len(self.trained))
        scal = [region_scaling(np.asarray(lo), np.asarray(hi)) for lo, hi in self._boxes]
        self._centre = np.array([c for c, _ in scal]).reshape(-1, 3)
        self._half = np.array([h for _, h in scal]).reshape(-1, 3)
        self._axis_tables = []
        for tiles in self.tiling.tiles:
            lo = np.array([t[0] for t in tiles], dtype=np.float64)
            last = np.array([t[1] - 1 for t in tiles], dtype=np.float64)
            m = len(tiles)
            has_prev = np.arange(m) > 0
            has_next = np.arange(m) < m - 1
            # Ramp up over [lo, end of previous tile], down over [start of next, last].
            up_span = np.where(has_prev, np.concatenate([[1.0], last[:-1]]) - lo, 1.0)
            down_lo = np.where(has_next, np.concatenate([lo[1:], [0.0]]), 0.0)
            down_span = np.where(has_next, last - down_lo, 1.0)
            self._axis_tables.append((lo, last, has_prev, up_span, has_next, down_lo,
                                      down_span))

    def _net_tables(self, dtype: np.dtype) -> tuple[list[np.ndarray], ...]:
        """Folded networks as NumPy arrays of ``dtype``: weights transposed ``(R, in, out)``,
        biases ``(R, 1, out)``, weights ``(R, out, in)`` (made on first use)."""
        dtype = np.dtype(dtype)
        if dtype not in self._tables:
            self._tables[dtype] = (
                [np.ascontiguousarray(w.transpose(1, 2).numpy(), dtype=dtype) for w in self._w],
                [np.ascontiguousarray(b.unsqueeze(1).numpy(), dtype=dtype) for b in self._b],
                [np.ascontiguousarray(w.numpy(), dtype=dtype) for w in self._w])
        return self._tables[dtype]

    def _axis_weights(self, axis: int, k: np.ndarray, u: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Blend weight and its derivative (per voxel) of tiles ``k`` of ``axis`` at fractional
        voxel indices ``u`` (same shapes); :meth:`Tiling.axis_weights` vectorised over tiles."""
        lo, last, has_prev, up_span, has_next, down_lo, down_span = self._axis_tables[axis]
        w = ((u >= lo[k]) & (u <= last[k])).astype(np.float64)
        span = up_span[k]
        s, ds = smootherstep((u - lo[k]) / span)
        prev = has_prev[k]
        s = np.where(prev, s, 1.0)
        dw = np.where(prev, w * ds / span, 0.0)
        w = w * s
        span = down_span[k]
        s, ds = smootherstep((u - down_lo[k]) / span)
        nxt = has_next[k]
        s = np.where(nxt, s, 0.0)
        ds = np.where(nxt, ds, 0.0)
        dw = dw * (1.0 - s) - w * ds / span
        w = w * (1.0 - s)
        return w, dw

    def _axis_candidates(self, axis: int, u: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The (at most two) tiles of ``axis`` holding each coordinate ``u`` ``(n,)``:
        tile indices, weights, weight derivatives and a mask of those with weight > 0,
        each ``(n, 2)``."""
        lo = self._axis_tables[axis][0]
        k1 = np.searchsorted(lo, u, side="right") - 1
        k = np.stack([k1 - 1, k1], axis=1)
        valid = k >= 0
        k = np.clip(k, 0, len(lo) - 1)
        w, dw = self._axis_weights(axis, k, u[:, None])
        keep = valid & (w > 0)
        return k, w, dw, keep

    def _run_networks(self, x: np.ndarray, region: np.ndarray, counts: np.ndarray,
                      with_gradient: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Evaluate trained region ``region[i]``'s network at coordinates ``x[i]`` ``(P, 3)``,
        float32 or float64 (the networks run in that precision); pairs sorted by region,
        ``counts`` ``(R,)`` pairs per region. Returns the outputs ``(P,)`` and
        (``with_gradient``) their gradients ``(P, 3)`` with respect to the coordinates.

        Each region's pairs are cut into blocks of ``_BLOCK`` (only a region's last block is
        padded) and stacked with their region's weights; the blocks run through
        :func:`siren.forward_numpy` split over :func:`_eval_threads` threads, each with
        single-threaded BLAS (many small products in a multithreaded BLAS stall on a busy
        machine).
        """
        n_pairs = len(x)
        counts = np.asarray(counts, dtype=np.int64)
        if n_pairs > 4 * _BLOCK:
            block = _BLOCK
        else:  # few pairs: smaller blocks waste less padding
            block = min(_BLOCK, max(16, 1 << int(np.ceil(np.log2(max(1, counts.max()))))))
        n_blocks = (counts + block - 1) // block
        first_block = np.concatenate([[0], np.cumsum(n_blocks)[:-1]])
        first_pair = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(n_pairs) - first_pair[region]
        bid = first_block[region] + pos // block
        slot = pos % block
        total = int(n_blocks.sum())
        xb = np.zeros((total, block, 3), dtype=x.dtype)
        xb[bid, slot] = x
        blk_region = np.repeat(np.arange(len(counts)), n_blocks)
        wt_all, b_all, w_all = self._net_tables(x.dtype)

        def run(sl: slice) -> tuple[np.ndarray, np.ndarray | None]:
            r = blk_region[sl]
            wts = [np.take(w, r, axis=0) for w in wt_all]
            bs = [np.take(b, r, axis=0) for b in b_all]
            ws = [np.take(w, r, axis=0) for w in w_all] if with_gradient else None
            return siren.forward_numpy(xb[sl], wts, bs, ws)

        n_threads = min(_eval_threads(), total)
        with _single_threaded_blas():
            if n_threads < 2 or n_pairs < _PARALLEL_PAIRS:
                y, dy = run(slice(0, total))
            else:
                cuts = np.linspace(0, total, n_threads + 1).round().astype(int)
                parts = list(_thread_pool().map(run, [slice(int(c0), int(c1)) for c0, c1
                                                      in zip(cuts[:-1], cuts[1:], strict=True)]))
                y = np.concatenate([q[0] for q in parts])
                dy = np.concatenate([q[1] for q in parts]) if with_gradient else None
        return y[bid, slot], (dy[bid, slot] if dy is not None else None)

    def _blend(self, points: np.ndarray, with_gradient: bool,
               dtype: Any = np.float64) -> np.ndarray:
        """Blended density (and gradient per Å) ``(n, 4)`` or ``(n, 1)`` float64 at points
        ``(n, 3)`` Å inside the box, the networks run in ``dtype`` (float32: about twice as
        fast, float32 rounding); evaluated in pieces of at most ``_PIECE`` points.

        Each point's regions come from the tiling (at most two tiles per axis); the
        point-region pairs are grouped by region and all groups run in one batched call.
        """
        out = np.zeros((len(points), 4 if with_gradient else 1))
        if not self.trained or len(points) == 0:
            return out
        piece = _PIECE if with_gradient else 2 * _PIECE
        for start in range(0, len(points), piece):
            out[start:start + piece] = self._blend_piece(points[start:start + piece],
                                                         with_gradient, np.dtype(dtype))
        return out

    def _blend_piece(self, points: np.ndarray, with_gradient: bool, dtype: np.dtype
                     ) -> np.ndarray:
        n = len(points)
        u = (points - self.origin) / self.voxel_size
        cand = [self._axis_candidates(a, u[:, a]) for a in range(3)]
        (kx, wx, dwx, mx), (ky, wy, dwy, my), (kz, wz, dwz, mz) = cand
        keep = mx[:, :, None, None] & my[:, None, :, None] & mz[:, None, None, :]
        p, sx, sy, sz = np.nonzero(keep)
        ntx, nty, _ = self.tiling.grid_shape
        tx, ty, tz = kx[p, sx], ky[p, sy], kz[p, sz]
        region = self._trained_of[(tz * nty + ty) * ntx + tx]
        ok = region >= 0
        if not ok.all():
            p, sx, sy, sz, region = p[ok], sx[ok], sy[ok], sz[ok], region[ok]
        out = np.zeros((n, 4 if with_gradient else 1))
        if len(p) == 0:
            return out
        order = np.argsort(region, kind="stable")
        p, sx, sy, sz, region = p[order], sx[order], sy[order], sz[order], region[order]
        counts = np.bincount(region, minlength=len(self.trained))
        half = self._half[region]
        x = ((u[p] - self._centre[region]) / half).astype(dtype)
        y, dy = self._run_networks(x, region, counts, with_gradient)
        ax_, ay_, az_ = wx[p, sx], wy[p, sy], wz[p, sz]
        w = ax_ * ay_ * az_
        dens, slope = siren.output_density(y.astype(np.float64), self.softplus_beta)
        out[:, 0] = np.bincount(p, weights=w * dens, minlength=n)
        if with_gradient:
            dw = (dwx[p, sx] * ay_ * az_, ax_ * dwy[p, sy] * az_, ax_ * ay_ * dwz[p, sz])
            for a in range(3):
                g = w * (slope * dy[:, a] / half[:, a]) + dw[a] * dens
                out[:, 1 + a] = np.bincount(p, weights=g, minlength=n) / self.voxel_size[a]
        return out

    def _grid_slab_densities(self, ax: np.ndarray, ay: np.ndarray, az: np.ndarray
                             ) -> np.ndarray:
        """Densities ``(len(az), len(ay), len(ax))`` on a regular grid slab: each trained
        region evaluated on its own sub-block of grid points (no per-point region search),
        all regions in one batched call; NaN at grid points outside the box."""
        axes = [np.asarray(a, dtype=np.float64) for a in (ax, ay, az)]
        if any(len(a) > 1 and not np.all(np.diff(a) > 0) for a in axes):
            return super()._grid_slab_densities(ax, ay, az)
        out = np.zeros((len(axes[2]), len(axes[1]), len(axes[0])))
        lo_b, hi_b = self.bounds
        tol = 1e-6 * self.voxel_size
        # Per axis and tile: the contiguous run of grid indices with weight > 0 and weights.
        runs: list[list[tuple[int, int, np.ndarray, np.ndarray]]] = []
        inside_axis = []
        for a in range(3):
            v = axes[a]
            inside_axis.append((v >= lo_b[a] - tol[a]) & (v <= hi_b[a] + tol[a]))
            u = (v - self.origin[a]) / self.voxel_size[a]
            per_tile = []
            for k in range(len(self.tiling.tiles[a])):
                w, _ = self._axis_weights(a, np.full(len(u), k), u)
                nz = np.flatnonzero((w > 0) & inside_axis[a])
                if len(nz):
                    i0, i1 = int(nz[0]), int(nz[-1]) + 1
                    per_tile.append((i0, i1, w[i0:i1], u[i0:i1]))
                else:
                    per_tile.append((0, 0, w[:0], u[:0]))
            runs.append(per_tile)
        blocks = []
        xs = []
        regions = []
        for r, (tx, ty, tz) in enumerate(self._tiles):
            rx, ry, rz = runs[0][tx], runs[1][ty], runs[2][tz]
            if rx[1] == rx[0] or ry[1] == ry[0] or rz[1] == rz[0]:
                continue
            c, h = self._centre[r], self._half[r]
            cz, cy, cx = np.meshgrid((rz[3] - c[2]) / h[2], (ry[3] - c[1]) / h[1],
                                     (rx[3] - c[0]) / h[0], indexing="ij")
            xs.append(np.stack([cx.ravel(), cy.ravel(), cz.ravel()], axis=1).astype(np.float32))
            regions.append(r)
            blocks.append((rx, ry, rz))
        if regions:
            counts = np.zeros(len(self.trained), dtype=np.int64)
            sizes = [len(x) for x in xs]
            counts[regions] = sizes
            region_of_pair = np.repeat(np.array(regions), sizes)
            x_all = np.concatenate(xs)
            y = np.empty(len(x_all), dtype=np.float32)
            for s0 in range(0, len(x_all), _GRID_PAIRS):
                sl = slice(s0, s0 + _GRID_PAIRS)
                counts = np.bincount(region_of_pair[sl], minlength=len(self.trained))
                y[sl], _ = self._run_networks(x_all[sl], region_of_pair[sl], counts, False)
            dens, _ = siren.output_density(y.astype(np.float64), self.softplus_beta)
            start = 0
            for (rx, ry, rz), m in zip(blocks, sizes, strict=True):
                w = rz[2][:, None, None] * ry[2][None, :, None] * rx[2][None, None, :]
                out[rz[0]:rz[1], ry[0]:ry[1], rx[0]:rx[1]] += w * dens[start:start + m].reshape(
                    w.shape)
                start += m
        out = out.astype(np.float32)
        outside = ~(inside_axis[2][:, None, None] & inside_axis[1][None, :, None]
                    & inside_axis[0][None, None, :])
        out[outside] = np.nan
        return out

    def _blend_reference(self, points: np.ndarray, with_gradient: bool) -> np.ndarray:
        """The plain blend (every region tested against every point, float64 networks,
        forward-mode Jacobians): ``(n, 4)`` or ``(n, 1)``. Slow; kept as the reference the
        fast evaluation is tested against."""
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
                    dens, slope = siren.output_density(y[0].numpy(), self.softplus_beta)
                    ddens_du = np.reshape(slope, (-1, 1)) * dy[0].numpy() / half
                    out[sel, 1:] += w[:, None] * ddens_du + dw * dens[:, None]
                else:
                    dens, _ = siren.output_density(
                        siren.forward_folded(x, ws, bs)[0, :, 0].numpy(), self.softplus_beta)
            out[sel, 0] += w * dens
        if with_gradient:
            out[:, 1:] /= self.voxel_size  # per voxel -> per Å
        return out

    def _evaluate(self, points: np.ndarray) -> np.ndarray:
        return self._blend(points, True, np.float32).astype(np.float32)

    def _densities_fast(self, points: np.ndarray) -> np.ndarray:
        out = np.full(len(points), np.nan, dtype=np.float32)
        inside = self.contains(points)
        if inside.any():
            out[inside] = self._blend(points[inside], False, np.float32)[:, 0]
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
    errors = np.array([r["max_error"] for r in fitted if r.get("max_error") is not None],
                      dtype=float)
    epochs = np.array([r.get("epochs", 0) for r in fitted], dtype=float)
    widths = meta.get("network", {}).get("widths", [])
    lines = [
        f"neural map {field.map_id or '(no id)'}: preset {field.preset}, network "
        f"{'-'.join(str(w) for w in widths)}"
        + (f" with a softplus output (β {field.softplus_beta:g})"
           if field.softplus_beta is not None else "")
        + f", {field.n_parameters} parameters",
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
