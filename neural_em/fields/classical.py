"""Classical interpolation fields: trilinear and Fourier, the baselines beside spline and neural.

Both interpolate a normalised voxel map exactly at its voxels and share the query interface of
:class:`~neural_em.fields.base.DensityField`:

* :class:`TrilinearDensityMap`: trilinear interpolation between the 8 surrounding voxels; its
  gradient is the exact derivative of the trilinear form (along x it is constant across a
  cell, linear in y and z; at a cell face the cell on the upper side is used).
* :class:`FourierDensityMap`: band-limited (sinc) interpolation. The map is upsampled by an
  integer factor ``k`` per axis with zero-padded discrete cosine transforms (DCT-I: the map is
  mirrored about its first and last voxel before the Fourier transform, so the non-periodic
  box edges cause no wrap-around jump), giving exact trigonometric interpolation at the points
  of the ``k`` times finer grid; between those points a cubic B-spline on the upsampled grid
  (:class:`~neural_em.fields.spline.SplineDensityMap`) gives the value and analytic gradient.
  ``k`` is chosen so the upsampled spacing is at most a quarter voxel unless the upsampled grid
  would exceed ``max_upsampled_voxels`` (16 M by default), in which case ``k`` is lowered.
  ``boundary="periodic"`` uses a plain zero-padded FFT instead (exact for maps that wrap).

Fields save to ``.neural`` files (kind ``"trilinear"`` / ``"fourier"``, the normalised volume
plus the options) and load with :meth:`load`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields.base import VolumeField
from neural_em.fields.fileformat import require, volume_from_file
from neural_em.fields.spline import SplineGridField
from neural_em.voxelmap import VoxelMap

logger = logging.getLogger(__name__)

#: Largest upsampled grid the Fourier field builds by default (voxels): about 16 M voxels,
#: ~330 MB with the spline coefficients.
DEFAULT_MAX_UPSAMPLED_VOXELS = 1 << 24
#: Samples of the periodic interpolant kept beyond the box (the cubic B-spline prefilter's
#: boundary effect decays as 0.268^d: below 1e-6 after 12 samples).
_PERIODIC_MARGIN = 12


# ====================================================================== trilinear
class TrilinearDensityMap(VolumeField):
    """Trilinear interpolation over a normalised voxel map (same interface as the others)."""

    kind = "trilinear"

    def __init__(self, volume: VoxelMap) -> None:
        super().__init__(volume, {"interpolation": "trilinear"})
        self._flat = self.volume.ravel()
        nx, ny, _ = self.shape_xyz
        self._strides = np.array([1, nx, nx * ny], dtype=np.int64)

    def _evaluate(self, points: np.ndarray) -> np.ndarray:
        shape = np.array(self.shape_xyz)
        u = np.clip((points - self.origin) / self.voxel_size, 0.0, shape - 1.0)
        i0 = np.minimum(np.floor(u), np.maximum(shape - 2, 0)).astype(np.int64)
        t = u - i0
        step = np.where(shape > 1, self._strides, 0)  # axis of one voxel: no neighbour
        base = i0 @ self._strides
        f = self._flat
        c = np.empty((len(points), 2, 2, 2))  # [n, dz, dy, dx]
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    c[:, dz, dy, dx] = f[base + dx * step[0] + dy * step[1] + dz * step[2]]
        tx, ty, tz = t[:, 0], t[:, 1], t[:, 2]
        wx = np.stack([1 - tx, tx], axis=1)
        wy = np.stack([1 - ty, ty], axis=1)
        wz = np.stack([1 - tz, tz], axis=1)
        dw = np.array([-1.0, 1.0])
        out = np.empty((len(points), 4), dtype=np.float32)
        out[:, 0] = np.einsum("nzyx,nz,ny,nx->n", c, wz, wy, wx)
        out[:, 1] = np.einsum("nzyx,nz,ny,x->n", c, wz, wy, dw) / self.voxel_size[0]
        out[:, 2] = np.einsum("nzyx,nz,y,nx->n", c, wz, dw, wx) / self.voxel_size[1]
        out[:, 3] = np.einsum("nzyx,z,ny,nx->n", c, dw, wy, wx) / self.voxel_size[2]
        out[:, 1:][:, shape == 1] = 0.0
        return out

    def _densities_fast(self, points: np.ndarray) -> np.ndarray:
        out = np.full(len(points), np.nan, dtype=np.float32)
        inside = self.contains(points)
        if inside.any():
            zyx = ((points[inside] - self.origin) / self.voxel_size)[:, ::-1].T
            out[inside] = scipy.ndimage.map_coordinates(self.volume, zyx, order=1, mode="nearest")
        return out


# ====================================================================== Fourier
def fourier_upsample(
    data: np.ndarray, factors_zyx: Any, *, boundary: str = "mirror", margin: int = 0
) -> np.ndarray:
    """Band-limited upsampling of ``data (nz, ny, nx)`` by integer factors per axis.

    Returns ``((nz-1)*kz+1, (ny-1)*ky+1, (nx-1)*kx+1)`` float32 whose every ``k``-th sample is
    the input (up to rounding): the trigonometric interpolant evaluated on the finer grid over
    the same box. ``boundary="mirror"``: DCT-I (mirror about the first and last sample);
    ``"periodic"``: FFT of the box as one period. The Nyquist term is split evenly, so the
    interpolant is real and passes through the samples. ``margin`` (periodic only) adds that
    many samples of the (wrapped) interpolant beyond both ends of every axis longer than one.
    """
    if boundary not in ("mirror", "periodic"):
        raise InputError(f"boundary must be 'mirror' or 'periodic', got {boundary!r}")
    if margin and boundary != "periodic":
        raise InputError("margin is only defined for the periodic boundary")
    out = np.asarray(data, dtype=np.float32)
    for axis, k in enumerate(int(f) for f in factors_zyx):
        n = out.shape[axis]
        if k < 1:
            raise InputError(f"upsampling factors must be >= 1, got {factors_zyx!r}")
        if n == 1 or (k == 1 and not margin):
            continue
        out = _upsample_axis(out, axis, k, boundary, margin)
    return np.ascontiguousarray(out, dtype=np.float32)


def _upsample_axis(
    arr: np.ndarray, axis: int, k: int, boundary: str, margin: int = 0
) -> np.ndarray:
    n = arr.shape[axis]
    n_out = (n - 1) * k + 1
    moved = np.moveaxis(arr, axis, -1)
    result = np.empty(moved.shape[:-1] + (n_out + 2 * margin,), dtype=np.float32)
    # Process in slabs along the first axis to bound the transforms' temporaries.
    lead = moved.shape[0]
    per = max(1, (1 << 22) // max(1, int(np.prod(moved.shape[1:-1]) * (n_out + 2 * margin))))
    take = np.arange(-margin, n_out + margin) % (n * k)
    for s in range(0, lead, per):
        block = np.asarray(moved[s : s + per], dtype=np.float32)
        if boundary == "mirror":
            coef = scipy.fft.dct(block, type=1, axis=-1)  # length n, period 2(n-1)
            padded = np.zeros(block.shape[:-1] + (n_out,), dtype=coef.dtype)
            padded[..., :n] = coef
            padded[..., n - 1] *= 0.5  # old Nyquist term becomes an interior term
            up = scipy.fft.idct(padded, type=1, axis=-1) * k
        else:
            coef = scipy.fft.rfft(block, axis=-1)
            m = n * k
            padded = np.zeros(block.shape[:-1] + (m // 2 + 1,), dtype=coef.dtype)
            padded[..., : coef.shape[-1]] = coef
            if n % 2 == 0:
                padded[..., n // 2] *= 0.5
            up = scipy.fft.irfft(padded, n=m, axis=-1)[..., take] * k
        result[s : s + per] = up
    return np.moveaxis(result, -1, axis)


def choose_upsampling(
    shape_xyz: Any,
    voxel_size: Any,
    *,
    target_spacing_A: float | None = None,
    max_upsampled_voxels: int = DEFAULT_MAX_UPSAMPLED_VOXELS,
) -> tuple[int, int, int]:
    """Integer factors (x, y, z) so the upsampled spacing is <= ``target_spacing_A`` (default a
    quarter of the smallest voxel edge), lowered (largest first) until the upsampled grid has
    at most ``max_upsampled_voxels`` voxels (never below 1)."""
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    n = np.asarray(shape_xyz, dtype=np.int64)
    target = float(vs.min() / 4.0 if target_spacing_A is None else target_spacing_A)
    if not np.isfinite(target) or target <= 0:
        raise InputError(f"target_spacing_A must be positive, got {target_spacing_A!r}")
    k = np.maximum(1, np.ceil(vs / target - 1e-9)).astype(np.int64)
    k[n == 1] = 1

    def size(kk: np.ndarray) -> int:
        return int(np.prod((n - 1) * kk + 1))

    wanted = k.copy()
    while size(k) > max_upsampled_voxels and k.max() > 1:
        k[int(np.argmax(np.where(n > 1, k * vs, -1.0)))] -= 1
    if np.any(k < wanted):
        logger.warning(
            "Fourier upsampling lowered from %s to %s to stay within %d voxels "
            "(raise max_upsampled_voxels for a finer grid; at 1 the field is the "
            "cubic spline)",
            wanted.tolist(),
            k.tolist(),
            max_upsampled_voxels,
        )
    return tuple(int(v) for v in k)


class FourierDensityMap(SplineGridField):
    """Fourier (sinc) interpolation over a normalised voxel map: zero-padded DCT/FFT
    upsampling by integer factors, then a cubic B-spline on the upsampled grid (gradients and
    Hessians analytic).

    ``upsample``: factors (int or x, y, z) or None to choose them (see
    :func:`choose_upsampling`); ``boundary``: ``"mirror"`` (default) or ``"periodic"``.
    """

    kind = "fourier"

    def __init__(
        self,
        volume: VoxelMap,
        *,
        upsample: Any = None,
        target_spacing_A: float | None = None,
        max_upsampled_voxels: int = DEFAULT_MAX_UPSAMPLED_VOXELS,
        boundary: str = "mirror",
    ) -> None:
        if volume.normalisation is None:
            volume = volume.normalised()
        if upsample is None:
            k = choose_upsampling(
                volume.shape_xyz,
                volume.voxel_size,
                target_spacing_A=target_spacing_A,
                max_upsampled_voxels=max_upsampled_voxels,
            )
        else:
            k = tuple(int(v) for v in np.broadcast_to(np.asarray(upsample), (3,)))
            if min(k) < 1:
                raise InputError(f"upsample factors must be >= 1, got {upsample!r}")
        k = tuple(1 if n == 1 else f for n, f in zip(volume.shape_xyz, k, strict=True))
        super().__init__(
            volume,
            {
                "interpolation": f"Fourier ({boundary} boundary), upsampled then cubic B-spline",
                "upsample": list(k),
                "boundary": boundary,
            },
        )
        self.upsample = k
        self.boundary = boundary
        # Periodic: the spline's own (mirror) boundary must not meet the box, so the upsampled
        # grid extends _PERIODIC_MARGIN samples of the wrapped interpolant beyond each side.
        margin = _PERIODIC_MARGIN if boundary == "periodic" else 0
        up = fourier_upsample(volume.data, k[::-1], boundary=boundary, margin=margin)
        fine_vs = volume.voxel_size / np.array(k)
        extended = np.array([margin if n > 1 else 0 for n in volume.shape_xyz])
        fine = VoxelMap(
            data=up,
            voxel_size=fine_vs,
            origin=volume.origin - extended * fine_vs,
            map_id=volume.map_id,
            normalisation=volume.normalisation,
        )
        logger.debug(
            "Fourier field %s: upsampled %s by %s to %s",
            volume.map_id,
            volume.shape_xyz,
            k,
            fine.shape_xyz,
        )
        self._set_grid(fine)

    @classmethod
    def from_file_contents(
        cls, header: dict[str, Any], tensors: dict[str, np.ndarray], path: str | os.PathLike
    ) -> FourierDensityMap:
        volume = volume_from_file(cls.kind, header, tensors, path)
        k = require(header, "upsample", list, path)
        boundary = header.get("boundary", "mirror")
        if len(k) != 3 or not all(isinstance(v, int) and 1 <= v <= 64 for v in k):
            raise FieldFormatError(f"'upsample' must be three integers in 1..64, got {k!r}", path)
        if boundary not in ("mirror", "periodic"):
            raise FieldFormatError(f"unknown Fourier boundary {boundary!r}", path)
        return cls(volume, upsample=k, boundary=boundary)
