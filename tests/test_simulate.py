"""Map simulation from models: Gaussian shape and amplitude, grids, alignment, selection."""

from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest
from helpers import shared_file

from neural_em.errors import InputError
from neural_em.simulate import (
    CHIMERA_SIGMA_FACTOR,
    aligned_fine_grid,
    bounding_grid,
    read_atoms,
    simulate_aligned_pair,
    simulate_map,
)
from neural_em.voxelmap import read_map


def pdb_text(atoms) -> str:
    """A minimal PDB from ``(name, element, resname, x, y, z[, altloc])`` tuples (one residue,
    waters a second)."""
    lines = []
    for i, atom in enumerate(atoms, start=1):
        name, element, resname, x, y, z = atom[:6]
        altloc = atom[6] if len(atom) > 6 else " "
        hetatm = "HETATM" if resname == "HOH" else "ATOM  "
        seq = 2 if resname == "HOH" else 1
        lines.append(
            f"{hetatm}{i:5d} {name:<4s}{altloc}{resname:>3s} A{seq:4d}    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {element:>2s}"
        )
    return "\n".join(lines + ["END", ""])


@pytest.fixture
def one_carbon(tmp_path):
    path = tmp_path / "one.pdb"
    path.write_text(pdb_text([("CA", "C", "GLY", 1.3, -2.1, 0.7)]))
    return path


def test_single_atom_gaussian_moments(one_carbon):
    res = 3.0
    vmap = simulate_map(one_carbon, resolution_A=res, voxel_size_A=0.25)
    sigma = 0.225 * res
    w = vmap.data.astype(np.float64).ravel()
    pts = vmap.grid_points()
    centre = (w[:, None] * pts).sum(0) / w.sum()
    np.testing.assert_allclose(centre, [1.3, -2.1, 0.7], atol=1e-3)
    var = (w[:, None] * (pts - centre) ** 2).sum(0) / w.sum()
    np.testing.assert_allclose(np.sqrt(var), sigma, rtol=2e-3)
    # Chimera's normalisation: each Gaussian integrates to the atomic number (carbon: 6).
    assert w.sum() * np.prod(vmap.voxel_size) == pytest.approx(6.0, rel=2e-3)
    # Padding 3 x resolution around the atom, grid aligned to multiples of the voxel size.
    assert np.allclose(np.round(vmap.origin / 0.25) * 0.25, vmap.origin)
    assert np.all(vmap.origin <= np.array([1.3, -2.1, 0.7]) - 9.0 + 1e-9)
    assert np.all(vmap.extent_max >= np.array([1.3, -2.1, 0.7]) + 9.0 - 1e-9)
    assert vmap.data.min() == 0.0  # beyond the 5-sigma cutoff


def test_atom_on_grid_point_lands_at_its_voxel(tmp_path):
    # Atom at x=1, y=2, z=3 Å on a 1 Å aligned grid: the peak voxel is the atom's voxel.
    path = tmp_path / "a.pdb"
    path.write_text(pdb_text([("N", "N", "GLY", 1.0, 2.0, 3.0)]))
    vmap = simulate_map(path, resolution_A=3.0, voxel_size_A=1.0, edge_padding_A=4.0)
    z, y, x = np.unravel_index(np.argmax(vmap.data), vmap.data.shape)
    np.testing.assert_allclose(vmap.index_to_world([[x, y, z]])[0], [1.0, 2.0, 3.0])
    sigma = 0.675
    peak = 7 * (2 * math.pi) ** -1.5 / sigma**3
    assert vmap.value_at([[1.0, 2.0, 3.0]])[0] == pytest.approx(peak, rel=1e-6)
    # Asymmetric neighbours: one voxel along x is exp(-1/(2 sigma^2)) of the peak.
    assert vmap.value_at([[2.0, 2.0, 3.0]])[0] == pytest.approx(
        peak * math.exp(-0.5 / sigma**2), rel=1e-5
    )


def test_aligned_pair_shares_points():
    st = gemmi.read_pdb_string(
        pdb_text(
            [
                ("N", "N", "ALA", 0.31, 0.52, 0.13),
                ("CA", "C", "ALA", 1.7, 0.9, -0.4),
                ("C", "C", "ALA", 2.4, 2.2, 0.2),
                ("O", "O", "ALA", 3.1, 2.4, 1.3),
                ("CB", "C", "ALA", 1.9, -0.3, -1.6),
            ]
        )
    )
    coarse, fine, spec = simulate_aligned_pair(st, resolution_A=3.0, fine_step_A=0.2)
    assert spec.integer_ratio and spec.ratio == pytest.approx((5.0, 5.0, 5.0))
    np.testing.assert_allclose(fine.origin, coarse.origin)
    np.testing.assert_allclose(fine.extent_max, coarse.extent_max, atol=1e-9)
    sub = fine.data[::5, ::5, ::5]
    assert sub.shape == coarse.data.shape
    np.testing.assert_allclose(sub, coarse.data, rtol=1e-5, atol=1e-7 * coarse.data.max())


def test_fine_grid_when_step_does_not_divide():
    coarse = bounding_grid(
        np.array([[0.0, 0.0, 0.0], [10.0, 7.0, 5.0]]), voxel_size_A=3.2 / 3, edge_padding_A=9.6
    )
    spec = aligned_fine_grid(coarse, 0.2)
    assert not spec.integer_ratio
    np.testing.assert_allclose(spec.voxel_size, 0.2)
    np.testing.assert_allclose(spec.origin, coarse.origin)
    last = spec.origin + (np.array(spec.shape_xyz) - 1) * spec.voxel_size
    coarse_last = coarse.origin + (np.array(coarse.shape_xyz) - 1) * coarse.voxel_size
    assert np.all(last <= coarse_last + 1e-9) and np.all(last > coarse_last - 0.2)
    snapped = aligned_fine_grid(coarse, 0.2, snap_step=True)
    assert snapped.integer_ratio
    np.testing.assert_allclose(snapped.voxel_size, (3.2 / 3) / 5)
    assert snapped.shape_xyz == tuple((n - 1) * 5 + 1 for n in coarse.shape_xyz)


def test_chimera_grid_rule():
    xyz = np.array([[-1.25, 3.5, 0.1], [4.0, 8.25, 2.2]])
    spec = bounding_grid(xyz, voxel_size_A=1.0, edge_padding_A=9.0, grid="chimera")
    np.testing.assert_allclose(spec.origin, xyz.min(0) - 9.0)
    assert spec.shape_xyz == tuple(int(math.ceil(e + 18.0)) for e in xyz.max(0) - xyz.min(0))
    with pytest.raises(InputError, match="grid"):
        bounding_grid(xyz, voxel_size_A=1.0, edge_padding_A=9.0, grid="other")


def test_selection(tmp_path):
    path = tmp_path / "m.pdb"
    path.write_text(
        pdb_text(
            [
                ("N", "N", "CYS", 0.0, 0.0, 0.0),
                ("CA", "C", "CYS", 1.5, 0.0, 0.0),
                ("C", "C", "CYS", 2.0, 1.4, 0.0),
                ("O", "O", "CYS", 3.2, 1.6, 0.0),
                ("SG", "S", "CYS", 1.5, -1.0, 1.5),
                ("H", "H", "CYS", -0.5, 0.8, 0.0),
                ("O", "O", "HOH", 6.0, 6.0, 6.0),
                ("CB", "C", "CYS", 1.0, -0.5, 1.0, "A"),
                ("CB", "C", "CYS", 1.1, -0.6, 1.2, "B"),
            ]
        )
    )
    assert sorted(read_atoms(path).element) == ["C", "C", "C", "N", "O"]
    heavy = read_atoms(path, elements=None, include_waters=True, altlocs="all")
    assert len(heavy.xyz) == 8 and "H" not in heavy.element
    assert sorted(read_atoms(path, atom_names=("C", "N", "O")).name) == ["C", "N", "O"]
    with pytest.raises(InputError, match="no atoms selected"):
        read_atoms(path, elements=("FE",))
    with pytest.raises(InputError, match="no such model file"):
        read_atoms(tmp_path / "absent.pdb")
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\nloop_\n_atom_site.id\n")
    with pytest.raises(InputError):
        simulate_map(bad, resolution_A=3.0)
    with pytest.raises(InputError, match="resolution"):
        simulate_map(path, resolution_A=-1.0)


def test_reproduces_chimera_molmap_of_3i2n():
    """The shared 3i2n_sim3A.mrc (molmap at 3 Å) is reproduced with Chimera's exact options."""
    ref = read_map(shared_file("simulated/3i2n/3i2n_sim3A.mrc"))
    model = shared_file("simulated/3i2n/3i2n.pdb")
    sim = simulate_map(
        model,
        resolution_A=3.0,
        elements=None,
        include_waters=True,
        altlocs="all",
        sigma_factor=CHIMERA_SIGMA_FACTOR,
        grid="chimera",
    )
    assert sim.shape_xyz == ref.shape_xyz
    np.testing.assert_allclose(sim.origin, ref.origin, atol=1e-4)
    # Measured: 7e-6 of the maximum (float32 rounding).
    assert np.abs(sim.data - ref.data).max() < 1e-4 * ref.data.max()
