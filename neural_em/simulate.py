"""Maps simulated from atomic models: one Gaussian per atom, as Chimera's ``molmap``.

Each selected atom adds ``A * exp(-|r - r_atom|^2 / (2 sigma^2))`` with
``sigma = sigma_factor * resolution`` (Chimera's default ``sigmaFactor`` is 1/(pi*sqrt(2)) =
0.225) and, like Chimera, ``A = Z * (2 pi)^(-3/2) / sigma^3``: the Gaussian of an atom of atomic
number ``Z`` integrates to ``Z`` (Å^3 units). With ``sigma_factor=CHIMERA_SIGMA_FACTOR``,
``grid="chimera"``, waters and all alternative conformers this reproduces the shared
``3i2n_sim3A.mrc`` (a molmap of 3I2N at 3 Å) to 1e-5 of its maximum. Each Gaussian is cut off in a box of
``cutoff_sigmas`` standard deviations on each side of the atom (Chimera's ``cutoffRange``, 5),
so voxels far from every atom are exactly zero. The grid spans the atoms' bounding box plus
``edge_padding_A`` (Chimera's default: 3 x resolution) on each side with spacing
``voxel_size_A`` (default resolution / 3).

Grid placement (``grid=``):

* ``"aligned"`` (default): the origin is rounded down and the far edge up to multiples of the
  voxel size, so maps of the same model at different resolutions or paddings share grid points.
* ``"chimera"``: Chimera's ``molmap`` rule, origin = lowest atom coordinate - padding and
  ``ceil((max - min + 2 * padding) / step)`` voxels per axis (reproduces molmap's grid).

:func:`aligned_fine_grid` gives the grid of a fine control map (the study's 0.2 Å map) whose
points include every point of a coarse map. The Gaussians are summed per atom in a local box
from separable 1D factors, so a 0.2 Å map of a few thousand atoms takes about a second and
memory is the output array.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gemmi
import numpy as np

from neural_em.errors import InputError
from neural_em.models import read_structure
from neural_em.mrcread import check_voxel_count
from neural_em.voxelmap import VoxelMap

logger = logging.getLogger(__name__)

#: The study's selection ``molmap #0@C,N,O`` read as elements (see :func:`read_atoms`).
STUDY_ELEMENTS = ("C", "N", "O")
#: Chimera's default sigma factor exactly, 1 / (pi * sqrt(2)) = 0.22508; the study (and this
#: module's default) rounds it to 0.225.
CHIMERA_SIGMA_FACTOR = 1.0 / (math.pi * math.sqrt(2.0))
STUDY_SIGMA_FACTOR = 0.225


@dataclasses.dataclass(frozen=True)
class Atoms:
    """Selected atoms of a model: positions ``xyz (n, 3)`` Å, atomic numbers ``(n,)``, names."""

    xyz: np.ndarray
    atomic_number: np.ndarray
    element: tuple[str, ...]
    name: tuple[str, ...]
    source: str = ""


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A regular grid: ``origin`` (x, y, z Å of the first voxel), ``voxel_size`` (3,) Å and
    ``shape_xyz`` voxels; ``ratio`` is the coarse/fine spacing ratio it was derived with."""

    origin: np.ndarray
    voxel_size: np.ndarray
    shape_xyz: tuple[int, int, int]
    ratio: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def integer_ratio(self) -> bool:
        """True when every coarse grid point is also a point of this grid."""
        return all(abs(r - round(r)) < 1e-6 * max(r, 1.0) for r in self.ratio)

    def axes(self) -> list[np.ndarray]:
        """World coordinates (Å) of the grid along x, y, z."""
        return [
            self.origin[a] + self.voxel_size[a] * np.arange(self.shape_xyz[a]) for a in range(3)
        ]

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape_xyz))


# Complexity over 15: one filter per selection option, applied in order.
def read_atoms(  # noqa: C901
    model: str | os.PathLike | gemmi.Structure,
    *,
    elements: Sequence[str] | None = STUDY_ELEMENTS,
    atom_names: Sequence[str] | None = None,
    include_waters: bool = False,
    altlocs: str = "first",
    model_index: int = 0,
) -> Atoms:
    """Heavy atoms of a PDB/mmCIF model (or a ``gemmi.Structure``), hydrogens skipped.

    ``elements`` keeps atoms of those elements (None: every heavy atom); ``atom_names`` (if
    given) keeps atoms of those names instead. Note: in Chimera's atom specification
    ``#0@C,N,O`` (the study's command) matches atom *names*, i.e. only backbone C, N and O;
    ``atom_names=("C", "N", "O")`` reproduces that literal reading. Only the first model is
    used; ``altlocs="first"`` keeps the first alternative conformation (as Chimera displays),
    ``"all"`` keeps every conformer at full weight. Raises :class:`InputError` for an unreadable
    model or when no atom is selected.
    """
    source = ""
    if isinstance(model, gemmi.Structure):
        st = model.clone()
        source = st.name
    else:
        source = str(Path(model))
        st = read_structure(model)  # the one structure reader: size, parse and content checks
    if len(st) <= model_index:
        raise InputError(
            f"model has {len(st)} models, no model number {model_index}", source or None
        )
    if altlocs == "first":
        st.remove_alternative_conformations()
    elif altlocs != "all":
        raise InputError(f"altlocs must be 'first' or 'all', got {altlocs!r}")
    want_el = None if elements is None else {e.strip().upper() for e in elements}
    want_names = None if atom_names is None else {n.strip().upper() for n in atom_names}
    xyz, z, el, names = [], [], [], []
    for chain in st[model_index]:
        for res in chain:
            if not include_waters and res.is_water():
                continue
            for atom in res:
                if atom.element.is_hydrogen:
                    continue
                sym = atom.element.name.upper()
                if want_names is not None:
                    if atom.name.strip().upper() not in want_names:
                        continue
                elif want_el is not None and sym not in want_el:
                    continue
                if atom.element.atomic_number < 1:
                    continue  # unknown element "X"
                xyz.append(atom.pos.tolist())
                z.append(atom.element.atomic_number)
                el.append(atom.element.name)
                names.append(atom.name)
    if not xyz:
        what = (
            f"atom names {sorted(want_names)}"
            if want_names is not None
            else f"elements {sorted(want_el)}"
            if want_el is not None
            else "heavy atoms"
        )
        raise InputError(f"no atoms selected ({what}) in the model", source or None)
    arr = np.asarray(xyz, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("model holds non-finite atom coordinates", source or None)
    return Atoms(
        xyz=arr,
        atomic_number=np.asarray(z, dtype=np.int64),
        element=tuple(el),
        name=tuple(names),
        source=source,
    )


def bounding_grid(
    xyz: np.ndarray, *, voxel_size_A: Any, edge_padding_A: float, grid: str = "aligned"
) -> GridSpec:
    """The grid holding every atom ``xyz (n, 3)`` plus ``edge_padding_A`` on each side."""
    vs = np.broadcast_to(np.asarray(voxel_size_A, dtype=np.float64), (3,)).copy()
    lo = xyz.min(axis=0) - edge_padding_A
    hi = xyz.max(axis=0) + edge_padding_A
    if grid == "chimera":
        origin = lo
        shape = np.ceil((hi - lo) / vs - 1e-9).astype(int)
    elif grid == "aligned":
        first = np.floor(lo / vs + 1e-9)
        last = np.ceil(hi / vs - 1e-9)
        origin = first * vs
        shape = (last - first).astype(int) + 1
    else:
        raise InputError(f"grid must be 'aligned' or 'chimera', got {grid!r}")
    shape = np.maximum(shape, 1)
    return GridSpec(origin=origin, voxel_size=vs, shape_xyz=tuple(int(n) for n in shape))


def aligned_fine_grid(
    coarse: VoxelMap | GridSpec, step_A: float = 0.2, *, snap_step: bool = False
) -> GridSpec:
    """A fine grid (spacing about ``step_A``) whose points include the coarse grid's points.

    Same origin as ``coarse``. Where the coarse spacing is an integer multiple ``R`` of
    ``step_A`` (within 1e-6), the fine spacing is exactly ``coarse / R`` and the fine grid has
    ``(n - 1) * R + 1`` points per axis: every coarse voxel is a fine voxel and both grids span
    the same box. Otherwise (e.g. resolution 3.2 Å, coarse spacing 1.0667 Å) the spacing stays
    ``step_A``, as in the study's ``vop resample`` onto a 0.2 Å grid, with the same origin and
    as many points as fit inside the coarse box (so every fine point can be interpolated; only
    the coarse points at common multiples coincide). With ``snap_step=True`` the spacing
    becomes ``coarse / round(coarse / step_A)`` instead, so every coarse point is kept.
    """
    step = float(step_A)
    if not np.isfinite(step) or step <= 0:
        raise InputError(f"fine grid step must be a positive number of Å, got {step_A!r}")
    vs = np.asarray(coarse.voxel_size, dtype=np.float64)
    n = np.asarray(coarse.shape_xyz, dtype=np.int64)
    ratio = vs / step
    fine_vs = np.empty(3)
    shape = np.empty(3, dtype=np.int64)
    for a in range(3):
        r_int = max(1, int(round(ratio[a])))
        if abs(ratio[a] - r_int) < 1e-6 * max(ratio[a], 1.0) or snap_step:
            fine_vs[a] = vs[a] / r_int
            shape[a] = (n[a] - 1) * r_int + 1
        else:
            fine_vs[a] = step
            shape[a] = int(np.floor((n[a] - 1) * vs[a] / step + 1e-9)) + 1
    ratio_out = tuple(float(v) for v in vs / fine_vs)
    return GridSpec(
        origin=np.asarray(coarse.origin, dtype=np.float64).copy(),
        voxel_size=fine_vs,
        shape_xyz=tuple(int(v) for v in shape),
        ratio=ratio_out,
    )


def gaussian_sum(
    xyz: np.ndarray,
    weights: np.ndarray,
    *,
    sigma_A: float,
    grid: GridSpec,
    cutoff_sigmas: float = 5.0,
) -> np.ndarray:
    """Sum of Gaussians ``w * exp(-d^2 / (2 sigma^2))`` on ``grid``: ``(nz, ny, nx)`` float32.

    Each atom touches only the voxels within ``cutoff_sigmas * sigma_A`` of it along every
    axis (a box, as Chimera's ``sum_of_gaussians``); the box's values are the outer product
    of three 1D Gaussians.
    """
    nx, ny, nz = grid.shape_xyz
    check_voxel_count(nx * ny * nz, "the simulated map")
    out = np.zeros((nz, ny, nx), dtype=np.float32)
    sd = sigma_A / grid.voxel_size  # in voxels, x, y, z
    reach = cutoff_sigmas * sd
    centres = (np.asarray(xyz, dtype=np.float64) - grid.origin) / grid.voxel_size
    lo = np.maximum(np.ceil(centres - reach - 1e-9), 0).astype(np.int64)
    hi = np.minimum(np.floor(centres + reach + 1e-9), np.array([nx, ny, nz]) - 1).astype(np.int64)
    ok = np.all(hi >= lo, axis=1)
    for c, w, a, b in zip(
        centres[ok], np.asarray(weights, dtype=np.float64)[ok], lo[ok], hi[ok], strict=True
    ):
        gx = np.exp(-0.5 * ((np.arange(a[0], b[0] + 1) - c[0]) / sd[0]) ** 2) * w
        gy = np.exp(-0.5 * ((np.arange(a[1], b[1] + 1) - c[1]) / sd[1]) ** 2)
        gz = np.exp(-0.5 * ((np.arange(a[2], b[2] + 1) - c[2]) / sd[2]) ** 2)
        out[a[2] : b[2] + 1, a[1] : b[1] + 1, a[0] : b[0] + 1] += (
            gz[:, None, None] * np.multiply.outer(gy, gx)[None]
        ).astype(np.float32)
    return out


def simulate_map(
    model: str | os.PathLike | gemmi.Structure | Atoms,
    *,
    resolution_A: float,
    voxel_size_A: Any = None,
    elements: Sequence[str] | None = STUDY_ELEMENTS,
    atom_names: Sequence[str] | None = None,
    sigma_factor: float = STUDY_SIGMA_FACTOR,
    cutoff_sigmas: float = 5.0,
    edge_padding_A: float | None = None,
    origin: Any = None,
    shape_xyz: Sequence[int] | None = None,
    amplitude: str = "atomic_number",
    grid: str = "aligned",
    include_waters: bool = False,
    altlocs: str = "first",
    map_id: str | None = None,
) -> VoxelMap:
    """Simulate a map from a model: a Gaussian per atom of ``sigma = sigma_factor * resolution``.

    model: a PDB/mmCIF path, a ``gemmi.Structure`` or :class:`Atoms` from :func:`read_atoms`
    (``elements``/``atom_names``/``include_waters``/``altlocs`` select atoms, see there).
    resolution_A: map resolution (Å). voxel_size_A: grid spacing (default resolution / 3).
    edge_padding_A: padding around the atoms' bounding box (default 3 x resolution).
    origin, shape_xyz: give both to simulate on a fixed grid instead (e.g. an aligned fine
    grid, see :func:`aligned_fine_grid`). amplitude: ``"atomic_number"`` (Chimera: each
    Gaussian integrates to Z) or ``"unit"`` (each integrates to 1). Returns the raw
    (not normalised) :class:`VoxelMap`.
    """
    res = float(resolution_A)
    if not np.isfinite(res) or res <= 0:
        raise InputError(f"resolution_A must be a positive number of Å, got {resolution_A!r}")
    if not (np.isfinite(sigma_factor) and sigma_factor > 0):
        raise InputError(f"sigma_factor must be positive, got {sigma_factor!r}")
    if not (np.isfinite(cutoff_sigmas) and cutoff_sigmas > 0):
        raise InputError(f"cutoff_sigmas must be positive, got {cutoff_sigmas!r}")
    if amplitude not in ("atomic_number", "unit"):
        raise InputError(f"amplitude must be 'atomic_number' or 'unit', got {amplitude!r}")
    atoms = (
        model
        if isinstance(model, Atoms)
        else read_atoms(
            model,
            elements=elements,
            atom_names=atom_names,
            include_waters=include_waters,
            altlocs=altlocs,
        )
    )
    vs = np.broadcast_to(
        np.asarray(res / 3.0 if voxel_size_A is None else voxel_size_A, dtype=np.float64), (3,)
    ).copy()
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size_A must be positive, got {voxel_size_A!r}")
    if (origin is None) != (shape_xyz is None):
        raise InputError("give origin and shape_xyz together (or neither)")
    if origin is not None:
        shape = tuple(int(n) for n in shape_xyz)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"shape_xyz must be three positive integers, got {shape_xyz!r}")
        spec = GridSpec(
            origin=np.broadcast_to(np.asarray(origin, dtype=np.float64), (3,)).copy(),
            voxel_size=vs,
            shape_xyz=shape,
        )
    else:
        pad = 3.0 * res if edge_padding_A is None else float(edge_padding_A)
        if not np.isfinite(pad) or pad < 0:
            raise InputError(f"edge_padding_A must be >= 0, got {edge_padding_A!r}")
        spec = bounding_grid(atoms.xyz, voxel_size_A=vs, edge_padding_A=pad, grid=grid)
    sigma = sigma_factor * res
    if amplitude == "atomic_number":
        weights = atoms.atomic_number.astype(np.float64)
    else:
        weights = np.ones(len(atoms.xyz))
    weights = weights * (2.0 * math.pi) ** -1.5 / sigma**3
    data = gaussian_sum(atoms.xyz, weights, sigma_A=sigma, grid=spec, cutoff_sigmas=cutoff_sigmas)
    name = map_id if map_id is not None else (Path(atoms.source).stem if atoms.source else "sim")
    logger.info(
        "simulated %s at %.3g Å: %d atoms on %s voxels of %s Å",
        name,
        res,
        len(atoms.xyz),
        spec.shape_xyz,
        np.round(vs, 4).tolist(),
    )
    return VoxelMap(data=data, voxel_size=vs, origin=spec.origin, map_id=name, source=atoms.source)


def simulate_aligned_pair(
    model: str | os.PathLike | gemmi.Structure | Atoms,
    *,
    resolution_A: float,
    fine_step_A: float = 0.2,
    snap_step: bool = False,
    **kwargs: Any,
) -> tuple[VoxelMap, VoxelMap, GridSpec]:
    """A coarse map (spacing resolution/3 unless ``voxel_size_A`` is given) and the control
    map simulated directly on :func:`aligned_fine_grid` of it. Extra keywords go to
    :func:`simulate_map`. Returns ``(coarse, fine, fine_grid)``; both maps raw."""
    atoms = (
        model
        if isinstance(model, Atoms)
        else read_atoms(
            model,
            elements=kwargs.pop("elements", STUDY_ELEMENTS),
            atom_names=kwargs.pop("atom_names", None),
            include_waters=kwargs.pop("include_waters", False),
            altlocs=kwargs.pop("altlocs", "first"),
        )
    )
    for key in ("elements", "atom_names", "include_waters", "altlocs"):
        kwargs.pop(key, None)
    coarse = simulate_map(atoms, resolution_A=resolution_A, **kwargs)
    spec = aligned_fine_grid(coarse, fine_step_A, snap_step=snap_step)
    fine_kwargs = {
        k: v
        for k, v in kwargs.items()
        if k not in ("voxel_size_A", "origin", "shape_xyz", "edge_padding_A", "grid")
    }
    fine = simulate_map(
        atoms,
        resolution_A=resolution_A,
        voxel_size_A=spec.voxel_size,
        origin=spec.origin,
        shape_xyz=spec.shape_xyz,
        **fine_kwargs,
    )
    return coarse, fine, spec
