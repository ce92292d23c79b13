"""The pieces both graph methods share: the seed threshold, the seed grid, and connected
components. Works with any :class:`~neural_em.fields.base.DensityField`."""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from neural_em.errors import InputError
from neural_em.fields.base import DensityField, VolumeField


# ---------------------------------------------------------------------------- thresholds
def default_seed_threshold(field: DensityField) -> float:
    """The study's seed threshold: ``max(0.1, mean + 3 std)`` of the normalised map.

    Uses the field's normalisation record; a field without one is sampled on its own voxel
    grid to get the mean and standard deviation.
    """
    norm = field.normalisation
    if norm is not None:
        mean, std = norm.mean, norm.std
    else:
        vmap = field.to_voxel_density_map()
        mean = float(vmap.data.mean(dtype=np.float64))
        std = float(vmap.data.std(dtype=np.float64))
    return float(max(0.1, mean + 3.0 * std))


# ---------------------------------------------------------------------------- seeding
#: Most seeds a graph accepts by default (each costs ~70 bytes of walk state): a seed
#: threshold near zero on a large map is refused instead of exhausting memory.
DEFAULT_MAX_SEEDS = 20_000_000


def seed_points(
    field: DensityField, *, spacing_A: float, threshold: float, max_seeds: int = DEFAULT_MAX_SEEDS
) -> tuple[np.ndarray, np.ndarray]:
    """Grid points of spacing ``spacing_A`` whose density is ``>= threshold``.

    Returns ``(points (n, 3) float64 Å, values (n, 4) float32)`` in grid (z, y, x) order.
    The grid is processed slab by slab (``field.iter_grid_densities``, densities only, then
    full values at the kept points), so memory grows with the seeds kept only; more than
    ``max_seeds`` raises :class:`InputError` naming the option.
    """
    kept_pts: list[np.ndarray] = []
    kept_vals: list[np.ndarray] = []
    total = 0
    for ax, ay, zs, dens in field.iter_grid_densities(spacing_A):
        iz, iy, ix = np.nonzero(dens >= threshold)  # NaN compares False
        n = len(iz)
        if n == 0:
            continue
        total += n
        if total > max_seeds:
            raise InputError(
                f"more than {max_seeds} seed points at density >= {threshold:g}: raise the "
                "seed threshold (--seed-threshold) or max_seeds"
            )
        pts = np.stack([ax[ix], ay[iy], zs[iz]], axis=1)
        vals = field.get_values(pts)
        good = np.all(np.isfinite(vals), axis=1)
        kept_pts.append(pts[good])
        kept_vals.append(vals[good])
    if not kept_pts:
        return np.zeros((0, 3)), np.zeros((0, 4), dtype=np.float32)
    return np.concatenate(kept_pts), np.concatenate(kept_vals).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------- components
def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = scipy.sparse.coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def small_component_mask(n: int, edges: np.ndarray, min_nodes: int) -> np.ndarray:
    """Boolean ``(n,)``: nodes in connected components of at least ``min_nodes`` nodes."""
    if n == 0:
        return np.zeros(0, dtype=bool)
    comp = components(n, edges[:, 0], edges[:, 1])
    sizes = np.bincount(comp)
    return sizes[comp] >= min_nodes


def field_volume(field: DensityField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The field on its own voxel grid: ``(data (nz, ny, nx) float32, NaN as 0; voxel size
    (3,) Å; origin (3,) Å)``, without resampling where the field interpolates a volume."""
    if isinstance(field, VolumeField):
        data, vs, origin = field.volume, field.voxel_size, field.origin
    else:
        vmap = field.to_voxel_density_map()
        data, vs, origin = vmap.data, vmap.voxel_size, vmap.origin
    data = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0)
    return data, np.asarray(vs, dtype=np.float64), np.asarray(origin, dtype=np.float64)
