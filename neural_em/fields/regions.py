"""Regions of a voxel map and the smooth partition of unity that blends them.

A map of ``shape_xyz`` voxels is tiled along each axis independently: the axis is split into
``m`` cores of near-equal length, and each tile is its core extended by half the overlap on
each side (clipped at the map's edge), so neighbouring tiles share exactly ``overlap`` voxels
and no three tiles meet. A region is the product of one tile per axis; its box is given in
voxel indices ``lo <= index < hi`` (x, y, z).

Blending: along an axis, tile ``k`` has weight 1 inside, ramps up over its overlap with tile
``k - 1`` and down over its overlap with tile ``k + 1`` with the quintic smootherstep
``S(t) = 6t^5 - 15t^4 + 10t^3`` (first and second derivatives vanish at both ends). Over an
overlap the two tiles' weights are ``1 - S`` and ``S``, so they sum to one; a region's weight
is the product of its three tile weights, so the region weights sum to one everywhere, and
they are C2: a blended field is as smooth as its pieces, its gradient continuous across
borders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neural_em.errors import InputError

#: Largest region edge (voxels) allowed by the format.
MAX_REGION_EDGE = 64
#: Smallest overlap (voxels) between neighbouring regions.
MIN_OVERLAP = 4


def smootherstep(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``S(t)`` and ``S'(t)`` for ``t`` clipped to [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * t * (t * (6.0 * t - 15.0) + 10.0), 30.0 * t * t * (t - 1.0) ** 2


def plan_axis(n: int, *, size: int, overlap: int) -> list[tuple[int, int]]:
    """Tiles ``[(lo, hi), ...]`` covering ``0 .. n - 1`` with at most ``size`` voxels each.

    Neighbours share exactly ``overlap`` voxels; cores are at least ``overlap`` long so no
    three tiles overlap.
    """
    if n < 1:
        raise InputError(f"axis length must be positive, got {n}")
    if overlap < MIN_OVERLAP or size > MAX_REGION_EDGE or size < 2 * overlap:
        raise InputError(
            f"region size {size} and overlap {overlap} must satisfy "
            f"{MIN_OVERLAP} <= overlap, 2 * overlap <= size <= {MAX_REGION_EDGE}"
        )
    if n <= size:
        return [(0, n)]
    below, above = overlap // 2, overlap - overlap // 2
    # m tiles cover at most m * (size - overlap) + overlap voxels: end tiles need no outer
    # overlap, so their cores may be longer by half the overlap.
    m = max(2, math.ceil((n - overlap) / (size - overlap)))
    cores = _split(n, m, size - overlap, size - above, size - below)
    cuts = np.concatenate([[0], np.cumsum(cores)]).astype(int).tolist()
    return [(max(0, cuts[k] - below), min(n, cuts[k + 1] + above)) for k in range(m)]


def _split(n: int, m: int, max_inner: int, max_first: int, max_last: int) -> list[int]:
    """Core lengths summing to ``n``: as equal as possible within each tile's limit."""
    limits = [max_first] + [max_inner] * (m - 2) + [max_last]
    cores = [0] * m
    left = n
    # Water-filling: raise every core together, capped by its limit.
    while left > 0:
        open_ = [k for k in range(m) if cores[k] < limits[k]]
        share = max(1, left // len(open_))
        for k in open_:
            add = min(share, limits[k] - cores[k], left)
            cores[k] += add
            left -= add
            if left == 0:
                break
    return cores


@dataclass(frozen=True)
class Tiling:
    """Per-axis tiles of a map; regions are products of one tile per axis."""

    shape_xyz: tuple[int, int, int]
    tiles: tuple[tuple[tuple[int, int], ...], ...]  # per axis x, y, z: ((lo, hi), ...)

    @classmethod
    def plan(cls, shape_xyz: tuple[int, int, int], *, size: int, overlap: int) -> Tiling:
        """Tile a map of ``shape_xyz`` voxels into regions of at most ``size`` per edge."""
        tiles = tuple(tuple(plan_axis(int(n), size=size, overlap=overlap)) for n in shape_xyz)
        return cls(tuple(int(n) for n in shape_xyz), tiles)

    @classmethod
    def from_lists(cls, shape_xyz: list[int], tiles: list[list[list[int]]]) -> Tiling:
        """Rebuild (and check) a tiling stored as JSON lists; raises ``InputError``."""
        try:
            shape = tuple(int(n) for n in shape_xyz)
            parsed = tuple(tuple((int(lo), int(hi)) for lo, hi in axis) for axis in tiles)
        except (TypeError, ValueError) as exc:
            raise InputError(f"tiling is not lists of [lo, hi] integer pairs: {exc}") from exc
        if len(shape) != 3 or len(parsed) != 3:
            raise InputError("tiling must have three axes")
        for n, axis in zip(shape, parsed, strict=True):
            if not axis or axis[0][0] != 0 or axis[-1][1] != n:
                raise InputError(f"tiles {axis} do not cover an axis of {n} voxels")
            for k, (lo, hi) in enumerate(axis):
                if not (0 <= lo < hi <= n) or hi - lo > MAX_REGION_EDGE:
                    raise InputError(f"tile {(lo, hi)} is empty, outside the axis or too long")
                if k and not (
                    axis[k - 1][0] < lo and axis[k - 1][1] - lo >= 2 and axis[k - 1][1] < hi
                ):
                    raise InputError(
                        f"tiles {axis[k - 1]} and {(lo, hi)} do not overlap "
                        "by at least two voxels in order"
                    )
                if k >= 2 and axis[k - 2][1] > lo:
                    raise InputError("three tiles overlap")
        return cls(shape, parsed)

    def to_lists(self) -> list[list[list[int]]]:
        return [[[lo, hi] for lo, hi in axis] for axis in self.tiles]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Number of tiles along x, y, z."""
        return tuple(len(a) for a in self.tiles)  # type: ignore[return-value]

    def boxes(self) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """Every region's box ``((lo_x, lo_y, lo_z), (hi_x, hi_y, hi_z))``, x fastest."""
        out = []
        for tz in self.tiles[2]:
            for ty in self.tiles[1]:
                for tx in self.tiles[0]:
                    out.append(((tx[0], ty[0], tz[0]), (tx[1], ty[1], tz[1])))
        return out

    def tile_index(self, box: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[int, int, int]:
        """Per-axis tile indices of a region box; ``InputError`` if it is not in the tiling."""
        out = []
        for axis in range(3):
            pair = (int(box[0][axis]), int(box[1][axis]))
            try:
                out.append(self.tiles[axis].index(pair))
            except ValueError as exc:
                raise InputError(f"region box {box} is not a region of the tiling") from exc
        return tuple(out)  # type: ignore[return-value]

    def axis_weights(self, axis: int, k: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blending weight of tile ``k`` of ``axis`` and its derivative (per voxel) at
        fractional voxel indices ``u`` ``(n,)``; zero outside the tile."""
        tiles = self.tiles[axis]
        lo, hi = tiles[k]
        w = ((u >= lo) & (u <= hi - 1)).astype(np.float64)
        dw = np.zeros_like(w)
        if k > 0:  # ramp up over [lo, end of previous tile]
            a, b = lo, tiles[k - 1][1] - 1
            s, ds = smootherstep((u - a) / (b - a))
            dw = dw * s + w * ds / (b - a)
            w = w * s
        if k < len(tiles) - 1:  # ramp down over [start of next tile, hi - 1]
            c, d = tiles[k + 1][0], hi - 1
            s, ds = smootherstep((u - c) / (d - c))
            dw = dw * (1.0 - s) - w * ds / (d - c)
            w = w * (1.0 - s)
        return w, dw


def region_scaling(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-extent ``(3,)`` (voxel units) mapping a box's voxels onto [-1, 1].

    Network coordinate ``c = (u - centre) / half`` for a fractional voxel index ``u``; an axis
    one voxel long gets ``half = 1``.
    """
    lo = np.asarray(lo, dtype=np.float64)
    last = np.asarray(hi, dtype=np.float64) - 1.0
    centre = 0.5 * (lo + last)
    half = np.maximum(0.5 * (last - lo), 0.5)
    half = np.where(last > lo, half, 1.0)
    return centre, half
