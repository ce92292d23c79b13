"""The fast evaluation engine of :class:`~neural_em.fields.neural.NeuralDensityMap`.

Kept apart from the field (its construction, files and fit report live in
:mod:`neural_em.fields.neural`); ``docs/neural-eval.md`` describes the design and its
measurements. In short: each point's regions come straight from the tiling (at most two tiles
per axis), point-region pairs are grouped by region and run as one batched float32 call
(stacked BLAS products over blocks of pairs, in NumPy); grids are evaluated region by region on
their sub-blocks of grid points. ``_blend_reference`` keeps the plain formula for the tests.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from neural_em.fields import siren
from neural_em.fields.regions import Tiling, region_scaling, smootherstep

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
            _POOL = (
                os.getpid(),
                ThreadPoolExecutor(_eval_threads(), thread_name_prefix="neural-eval"),
            )
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


class NeuralEvaluation:
    """The evaluation methods of a neural field (a mixin of
    :class:`~neural_em.fields.neural.NeuralDensityMap`, placed before
    :class:`~neural_em.fields.base.DensityField` in its bases).

    Uses the field's ``tiling``, ``trained`` (indices of the regions with a network),
    ``_boxes`` and ``_tiles`` (their boxes and tile indices), ``_w``/``_b`` (folded float64
    networks, torch), ``softplus_beta``, ``origin``, ``voxel_size``, ``bounds`` and
    ``contains``; :meth:`_setup_fast` builds its tables once the field has them.
    """

    tiling: Tiling
    trained: list[int]
    softplus_beta: float | None
    _boxes: list[Any]
    _tiles: list[Any]
    _w: list[torch.Tensor]
    _b: list[torch.Tensor]

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
            self._axis_tables.append((lo, last, has_prev, up_span, has_next, down_lo, down_span))

    def _net_tables(self, dtype: np.dtype) -> tuple[list[np.ndarray], ...]:
        """Folded networks as NumPy arrays of ``dtype``: weights transposed ``(R, in, out)``,
        biases ``(R, 1, out)``, weights ``(R, out, in)`` (made on first use)."""
        dtype = np.dtype(dtype)
        if dtype not in self._tables:
            self._tables[dtype] = (
                [np.ascontiguousarray(w.transpose(1, 2).numpy(), dtype=dtype) for w in self._w],
                [np.ascontiguousarray(b.unsqueeze(1).numpy(), dtype=dtype) for b in self._b],
                [np.ascontiguousarray(w.numpy(), dtype=dtype) for w in self._w],
            )
        return self._tables[dtype]

    def _axis_weights(
        self, axis: int, k: np.ndarray, u: np.ndarray
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

    def _axis_candidates(
        self, axis: int, u: np.ndarray
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

    def _run_networks(
        self, x: np.ndarray, region: np.ndarray, counts: np.ndarray, with_gradient: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
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
                parts = list(
                    _thread_pool().map(
                        run,
                        [
                            slice(int(c0), int(c1))
                            for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True)
                        ],
                    )
                )
                y = np.concatenate([q[0] for q in parts])
                dy = np.concatenate([q[1] for q in parts]) if with_gradient else None
        return y[bid, slot], (dy[bid, slot] if dy is not None else None)

    def _blend(
        self, points: np.ndarray, with_gradient: bool, dtype: Any = np.float64
    ) -> np.ndarray:
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
            out[start : start + piece] = self._blend_piece(
                points[start : start + piece], with_gradient, np.dtype(dtype)
            )
        return out

    def _blend_piece(self, points: np.ndarray, with_gradient: bool, dtype: np.dtype) -> np.ndarray:
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

    def _grid_slab_densities(self, ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
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
            cz, cy, cx = np.meshgrid(
                (rz[3] - c[2]) / h[2], (ry[3] - c[1]) / h[1], (rx[3] - c[0]) / h[0], indexing="ij"
            )
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
                out[rz[0] : rz[1], ry[0] : ry[1], rx[0] : rx[1]] += w * dens[
                    start : start + m
                ].reshape(w.shape)
                start += m
        out = out.astype(np.float32)
        outside = ~(
            inside_axis[2][:, None, None]
            & inside_axis[1][None, :, None]
            & inside_axis[0][None, None, :]
        )
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
            ws = [t[i : i + 1] for t in self._w]
            bs = [t[i : i + 1] for t in self._b]
            with torch.no_grad():
                if with_gradient:
                    y, dy = siren.forward_with_jacobian(x, ws, bs)
                    dens, slope = siren.output_density(y[0].numpy(), self.softplus_beta)
                    ddens_du = np.reshape(slope, (-1, 1)) * dy[0].numpy() / half
                    out[sel, 1:] += w[:, None] * ddens_du + dw * dens[:, None]
                else:
                    dens, _ = siren.output_density(
                        siren.forward_folded(x, ws, bs)[0, :, 0].numpy(), self.softplus_beta
                    )
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
