"""Map input/output: ChimeraX placement, real headers, normalisation, cropping, writing."""

from __future__ import annotations

import gzip
import shutil

import gemmi
import mrcfile
import numpy as np
import pytest
from helpers import hot_voxel_map, shared_file

from neural_em.errors import InputError, MapFormatError, SizeLimitError
from neural_em.fields import SplineDensityMap
from neural_em.voxelmap import VoxelMap, load_normalised, read_map, write_map


def _ca_coordinates(path) -> np.ndarray:
    st = gemmi.read_structure(str(path))
    return np.array([c.atom.pos.tolist() for c in st[0].all() if c.atom.name == "CA"])


def _mean_density_at(vmap: VoxelMap, points: np.ndarray) -> float:
    field = SplineDensityMap(vmap.normalised())
    dens = field.get_densities(points)
    assert np.all(np.isfinite(dens)), "model atoms fall outside the map box"
    return float(dens.mean())


@pytest.mark.parametrize(
    ("map_name", "model_name"),
    [
        ("emd_21457_seg.mrc", "6vyb_Ndom.pdb"),
        ("emd_21457_seg_nstart.mrc", "6vyb_Ndom.pdb"),
        ("emd_21457_seg_orig0.mrc", "6vyb_Ndom_shifted.pdb"),
    ],
)
def test_emd21457_model_sits_on_density(map_name, model_name):
    vmap = read_map(shared_file(f"emd_21457/{map_name}"))
    ca = _ca_coordinates(shared_file(f"emd_21457/{model_name}"))
    on = _mean_density_at(vmap, ca)
    norm = vmap.normalised().normalisation
    # The C-alphas sit 2-3 standard deviations above the normalised mean (measured 0.33 vs 0.05).
    assert on > norm.mean + 2 * norm.std
    # Shifted by 3 Å the density at the same atoms falls sharply.
    off = _mean_density_at(vmap, ca + np.array([3.0, 0.0, 0.0]))
    assert off < 0.7 * on


def test_emd21457_three_placements_agree():
    seg = read_map(shared_file("emd_21457/emd_21457_seg.mrc"))
    nstart = read_map(shared_file("emd_21457/emd_21457_seg_nstart.mrc"))
    orig0 = read_map(shared_file("emd_21457/emd_21457_seg_orig0.mrc"))
    np.testing.assert_allclose(seg.origin, nstart.origin, atol=1e-3)
    np.testing.assert_array_equal(orig0.origin, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(seg.data, orig0.data)
    # NSTART (155, 220, 195) times the voxel size gives the world origin.
    np.testing.assert_allclose(
        nstart.origin, np.array([155, 220, 195]) * nstart.voxel_size, atol=1e-3
    )


def test_emd3001_axes_312_anisotropic_nonzero_start():
    path = shared_file("emd_3001/EMD-3001.map")
    vmap = read_map(path)
    assert vmap.axis_order == (3, 1, 2)
    # Columns are z (73), rows x (43), sections y (25).
    assert vmap.shape_xyz == (43, 25, 73)
    np.testing.assert_allclose(vmap.voxel_size, [0.44825, 0.3925, 0.45875], atol=1e-4)
    # NC/NR/NS starts (0, -21, -12) belong to z, x, y.
    np.testing.assert_allclose(vmap.origin, np.array([-21, -12, 0]) * vmap.voxel_size, atol=1e-4)
    _assert_same_as_gemmi(path, vmap)


def test_emd11007_axes_321():
    path = shared_file("emd_11007/emd_11007.map")
    vmap = read_map(path)
    assert vmap.axis_order == (3, 2, 1)
    assert vmap.shape_xyz == (240, 240, 240)
    np.testing.assert_allclose(vmap.voxel_size, 0.834, atol=1e-4)
    _assert_same_as_gemmi(path, vmap)


def _assert_same_as_gemmi(path, vmap: VoxelMap) -> None:
    """gemmi reorders the axes independently; its grid is x-first (Fortran order)."""
    ccp4 = gemmi.read_ccp4_map(str(path))
    ccp4.setup(float("nan"), gemmi.MapSetup.ReorderOnly)
    grid = np.array(ccp4.grid, copy=False)
    np.testing.assert_array_equal(grid.transpose(2, 1, 0), vmap.data)


def test_hot_voxel_write_read_query(tmp_path):
    vmap = hot_voxel_map()
    out = write_map(tmp_path / "hot.mrc", vmap)
    assert mrcfile.validate(str(out), print_file=open("/dev/null", "w"))  # noqa: SIM115
    back = read_map(out)
    np.testing.assert_array_equal(back.data, vmap.data)
    np.testing.assert_allclose(back.voxel_size, vmap.voxel_size, rtol=1e-6)
    np.testing.assert_allclose(back.origin, vmap.origin, atol=1e-5)
    with mrcfile.open(out) as mrc:
        assert (int(mrc.header.nxstart), int(mrc.header.nystart), int(mrc.header.nzstart)) == (
            0,
            0,
            0,
        )
        assert (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps)) == (1, 2, 3)
    hot_world = vmap.origin + np.array([1, 2, 3]) * vmap.voxel_size
    field = SplineDensityMap(back)
    assert field.get_densities(hot_world)[0] == pytest.approx(1.0, abs=1e-6)
    # The hot voxel is the maximum of the field on its own grid.
    grid = field.sample_densities(*field.voxel_size)
    assert np.unravel_index(np.argmax(grid), grid.shape) == (3, 2, 1)


def test_compressed_maps_read(tmp_path):
    vmap = hot_voxel_map()
    plain = write_map(tmp_path / "hot.mrc", vmap)
    gz = tmp_path / "hot.mrc.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    np.testing.assert_array_equal(read_map(gz).data, vmap.data)
    bz = write_map(tmp_path / "hot.map.bz2", vmap)
    np.testing.assert_array_equal(read_map(bz).data, vmap.data)


def test_float16_mode12_read(tmp_path):
    path = tmp_path / "half.mrc"
    data = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 2.0
    vmap = read_map(path)
    assert vmap.data.dtype == np.float32
    np.testing.assert_array_equal(vmap.data, data.astype(np.float32))


def test_normalisation_as_in_study():
    data = np.array([[[-2.0, 0.0], [1.0, 4.0]]], dtype=np.float32)
    vmap = VoxelMap(data=data, voxel_size=1.0, origin=0.0).normalised()
    np.testing.assert_allclose(vmap.data.ravel(), [0.0, 0.0, 0.25, 1.0])
    norm = vmap.normalisation
    assert (norm.original_min, norm.original_max) == (-2.0, 4.0)
    assert norm.mean == pytest.approx(0.3125)
    assert norm.std == pytest.approx(np.std([0, 0, 0.25, 1.0]))
    assert norm.to_normalised(2.0) == pytest.approx(0.5)


@pytest.mark.parametrize("value", [0.0, 3.0, -1.0])
def test_constant_map_is_refused(value):
    vmap = VoxelMap(data=np.full((3, 3, 3), value, dtype=np.float32), voxel_size=1, origin=0)
    with pytest.raises(MapFormatError, match="no positive density range"):
        vmap.normalised()


def test_crop_to_contour_keeps_margin():
    data = np.zeros((40, 40, 40), dtype=np.float32)
    data[20, 15, 10] = 2.0  # z, y, x
    vmap = VoxelMap(data=data, voxel_size=1.0, origin=(100.0, 0.0, 0.0)).normalised()
    crop = vmap.crop_to_contour(1.0, margin_A=5.0)
    assert crop.shape_xyz == (11, 11, 11)
    np.testing.assert_allclose(crop.origin, [105.0, 10.0, 15.0])
    assert crop.value_at(np.array([[110.0, 15.0, 20.0]]))[0] == 1.0
    with pytest.raises(InputError, match="no voxel reaches"):
        vmap.crop_to_contour(5.0)


def test_crop_real_map_contains_model():
    vmap = load_normalised(shared_file("emd_3488/emd_3488.mrc"), contour=0.1)
    assert vmap.shape_xyz == (73, 75, 63)
    ca = _ca_coordinates(shared_file("emd_3488/5ni1.cif"))
    lo, hi = vmap.origin, vmap.extent_max
    inside = np.all((ca >= lo) & (ca <= hi), axis=1)
    assert inside.mean() > 0.99


def test_size_limit_names_the_option(tmp_path):
    path = write_map(tmp_path / "m.mrc", np.ones((10, 10, 10), dtype=np.float32))
    with pytest.raises(SizeLimitError, match="--max-voxels"):
        read_map(path, max_voxels=999)
    assert read_map(path, max_voxels=1000).shape_xyz == (10, 10, 10)


def test_write_refuses_to_overwrite(tmp_path):
    path = write_map(tmp_path / "m.mrc", np.ones((2, 2, 2), dtype=np.float32))
    with pytest.raises(FileExistsError):
        write_map(path, np.zeros((2, 2, 2), dtype=np.float32))
    write_map(path, np.zeros((2, 2, 2), dtype=np.float32), overwrite=True)
    assert read_map(path).data.max() == 0.0
