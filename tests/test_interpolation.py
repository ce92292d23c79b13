"""The interpolation experiments: simulated control, held-out voxels, statistics, skipping."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import gaussian_blobs, shared_file

from neural_em.errors import InputError
from neural_em.fields.classical import TrilinearDensityMap
from neural_em.fields.spline import SplineDensityMap
from neural_em.pipeline.chimera import chimera_experiment
from neural_em.pipeline.interpolation import (
    error_stats,
    heldout_experiment,
    interpolation_experiment,
    neural_available,
)
from neural_em.simulate import Atoms
from neural_em.voxelmap import VoxelMap, read_map, write_map


@pytest.fixture(scope="module")
def atoms() -> Atoms:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0.0, 10.0, size=(40, 3))
    z = rng.choice([6, 7, 8], size=40)
    return Atoms(
        xyz=xyz, atomic_number=z, element=("C",) * 40, name=("CA",) * 40, source="random40"
    )


def test_error_stats():
    s = error_stats(np.array([1.0, 2.0, 3.5]), np.array([1.5, 2.0, 2.5]))
    assert s["n"] == 3 and s["min"] == -0.5 and s["max"] == 1.0 and s["max_abs"] == 1.0
    assert s["mean"] == pytest.approx(0.5 / 3) and s["mean_abs"] == pytest.approx(0.5)
    assert s["rmse"] == pytest.approx(np.sqrt(1.25 / 3))
    assert error_stats(np.zeros(0), np.zeros(0))["mean"] is None


def test_interpolation_experiment_small(atoms):
    r = interpolation_experiment(
        atoms, resolution_A=3.0, fine_step_A=0.5, methods=("trilinear", "fourier", "spline")
    )
    assert r["control"]["integer_ratio"] and r["control"]["ratio"] == [2.0, 2.0, 2.0]
    assert r["control"]["origin"] == r["coarse"]["origin"]
    n_fine = int(np.prod(r["control"]["shape_xyz"]))
    m = r["methods"]
    for name in ("trilinear", "fourier", "spline"):
        common = m[name]["common"]
        assert common["all"]["n"] == n_fine and common["points_outside_field"] == 0
        assert common["nonzero"]["n"] == r["control"]["n_nonzero"] < n_fine
        assert 0 < common["dense"]["n"] < common["nonzero"]["n"]
        # The separate normalisation inflates predictions: its mean error is higher.
        assert m[name]["separate"]["nonzero"]["mean"] > common["nonzero"]["mean"]
    # Cubic spline beats trilinear on simulated maps (3i2n: 0.0100 vs 0.0232).
    assert (
        m["spline"]["common"]["nonzero"]["mean_abs"]
        < 0.7 * m["trilinear"]["common"]["nonzero"]["mean_abs"]
    )
    # The coarse grid misses peaks: the control's maximum is higher.
    assert r["control"]["raw_max"] > r["control"]["coarse_raw_max"]


def test_interpolation_subset_and_bad_method(atoms):
    r = interpolation_experiment(
        atoms, resolution_A=3.0, fine_step_A=0.5, methods=("spline",), max_eval_points=5000
    )
    assert r["evaluated_points"] == 5000
    assert r["methods"]["spline"]["common"]["all"]["n"] == 5000
    with pytest.raises(InputError, match="unknown interpolation method"):
        interpolation_experiment(atoms, resolution_A=3.0, methods=("cubic",))


def test_neural_skipped_with_note_when_missing(atoms, monkeypatch):
    monkeypatch.setitem(sys.modules, "neural_em.fields.neural", None)  # import fails
    assert not neural_available()[0]
    r = interpolation_experiment(
        atoms, resolution_A=3.0, fine_step_A=1.0, methods=("trilinear", "neural")
    )
    assert "neural" in r["skipped"] and "neural" not in r["methods"]
    assert "trilinear" in r["methods"]


def test_heldout_smooth_volume_ranks_methods():
    rng = np.random.default_rng(3)
    vmap = gaussian_blobs(
        rng.uniform(6, 20, size=(8, 3)), shape_xyz=(27, 27, 27), sigma_A=2.5, voxel_size=1.0
    )
    r = heldout_experiment(vmap)
    assert r["heldout_voxels"] == 27**3 - 14**3
    assert r["coarse"]["shape_xyz"] == [14, 14, 14] and r["coarse"]["voxel_size"] == [2.0] * 3
    mae = {k: v["all"]["mean_abs"] for k, v in r["methods"].items()}
    # Smooth volume, 2 Å sub-grid of sigma 2.5 Å blobs: Fourier < spline < trilinear.
    assert mae["fourier"] < 0.5 * mae["spline"] < 0.5 * mae["trilinear"]


def test_heldout_even_size_is_cropped_and_subset():
    vmap = gaussian_blobs([[8.0, 9.0, 7.0]], shape_xyz=(18, 16, 15), sigma_A=2.0)
    r = heldout_experiment(vmap, methods=("trilinear",), max_eval_points=500)
    assert r["full"]["shape_xyz"] == [17, 15, 15]
    assert r["methods"]["trilinear"]["all"]["n"] == 500
    assert r["methods"]["trilinear"]["points_outside_field"] == 0
    with pytest.raises(InputError, match="too small"):
        heldout_experiment(gaussian_blobs([[1.0, 1.0, 1.0]], shape_xyz=(4, 6, 6)))


def test_heldout_real_map_emd_21457():
    vmap = read_map(shared_file("emd_21457/emd_21457_seg.mrc"))
    r = heldout_experiment(vmap)
    m = r["methods"]
    # Measured (dense = normalised truth >= 0.2): MAE trilinear 0.088, spline 0.056,
    # Fourier 0.048; over all held-out voxels spline 0.0229 < trilinear 0.0247 < Fourier 0.0256.
    assert m["fourier"]["dense"]["mean_abs"] < 0.95 * m["spline"]["dense"]["mean_abs"]
    assert m["spline"]["dense"]["mean_abs"] < 0.8 * m["trilinear"]["dense"]["mean_abs"]
    assert m["spline"]["all"]["mean_abs"] < m["trilinear"]["all"]["mean_abs"]


def test_neural_smoke_in_heldout():
    """A few epochs of the fast preset through the experiment (about 5 s on a loaded CPU)."""
    ok, why = neural_available()
    if not ok:
        pytest.skip(why)
    vmap = gaussian_blobs([[8.0, 9.0, 7.0], [12.0, 8.0, 10.0]], shape_xyz=(17, 17, 17), sigma_A=2.0)
    r = heldout_experiment(
        vmap, methods=("neural",), neural_kwargs={"preset": "fast", "max_epochs": 3, "seed": 0}
    )
    assert r["methods"]["neural"]["all"]["n"] == 17**3 - 9**3
    assert np.isfinite(r["methods"]["neural"]["all"]["mean_abs"])


# ---------------------------------------------------------------------- Chimera's maps
CENTRES = [[4.0, 5.0, 6.0], [7.0, 6.5, 4.5], [6.0, 3.5, 7.5]]


def chimera_like_maps(scale: float = 1.0) -> tuple[VoxelMap, VoxelMap, VoxelMap]:
    """Stand-ins for Chimera's molmap at 1 Å and at 0.5 Å on an aligned grid (same origin, same
    box) and its ``vop resample`` of the coarse map onto the fine grid (our trilinear field,
    raw scale). ``scale`` multiplies every density (molmap's units are arbitrary)."""
    coarse = gaussian_blobs(
        CENTRES, shape_xyz=(12, 12, 12), voxel_size=1.0, sigma_A=1.2, amplitudes=[scale] * 3
    )
    fine = gaussian_blobs(
        CENTRES, shape_xyz=(23, 23, 23), voxel_size=0.5, sigma_A=1.2, amplitudes=[scale] * 3
    )
    nc = coarse.normalised().normalisation
    tri = TrilinearDensityMap(coarse.normalised()).get_densities(fine.grid_points())
    trilinear = VoxelMap(
        data=nc.to_raw(tri).reshape(fine.data.shape).astype(np.float32),
        voxel_size=0.5,
        origin=0.0,
        map_id="trilinear",
    )
    return coarse, fine, trilinear


def test_chimera_experiment_errors_on_the_controls_scale():
    coarse, fine, trilinear = chimera_like_maps()
    r = chimera_experiment(
        coarse, fine, trilinear, resolution_A=3.0, methods=["trilinear", "spline"]
    )
    assert r["simulator"] == "chimera" and r["evaluated_points"] == "all"
    assert r["control"]["n_nonzero"] == int(np.count_nonzero(fine.data))
    # By hand: predictions on the coarse map's raw scale, put on the control's normalised scale.
    nc, nf = coarse.normalised().normalisation, fine.normalised().normalisation
    control = fine.normalised().data.ravel()
    nonzero = fine.data.ravel() > 0
    spline = SplineDensityMap(coarse.normalised()).get_densities(fine.grid_points())
    expected = {
        "trilinear": nf.to_normalised(trilinear.data.ravel()),
        "spline": (nc.to_raw(spline.astype(np.float64)) - nf.clip_min)
        / (nf.clip_max - nf.clip_min),
    }
    for method, pred in expected.items():
        got = r["methods"][method]["common"]
        assert got["points_outside_field"] == 0
        for name, mask in (("all", slice(None)), ("nonzero", nonzero)):
            want = error_stats(pred[mask], control[mask])
            assert got[name]["n"] == want["n"]
            for key in ("mean", "mean_abs", "rmse", "min", "max"):
                assert got[name][key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (
                    method,
                    name,
                    key,
                )
    m = r["methods"]
    assert m["trilinear"]["source"] == "chimera" and m["spline"]["source"] == "neural_em"
    # Smooth blobs on a 1 Å grid: the spline is closer to the 0.5 Å control than trilinear.
    assert (
        m["spline"]["common"]["all"]["mean_abs"] < 0.5 * m["trilinear"]["common"]["all"]["mean_abs"]
    )


def test_chimera_experiment_does_not_depend_on_the_density_unit():
    """Molmap's densities have no unit: scaling every map by 10 changes no error."""
    one = chimera_experiment(
        *chimera_like_maps(), resolution_A=3.0, methods=["trilinear", "spline"]
    )
    ten = chimera_experiment(
        *chimera_like_maps(10.0), resolution_A=3.0, methods=["trilinear", "spline"]
    )
    for method in ("trilinear", "spline"):
        for name in ("all", "nonzero"):
            a, b = one["methods"][method]["common"][name], ten["methods"][method]["common"][name]
            assert b["mean_abs"] == pytest.approx(a["mean_abs"], rel=1e-4)
            assert b["max_abs"] == pytest.approx(a["max_abs"], rel=1e-4)


def test_chimera_experiment_control_as_its_own_prediction_and_files(tmp_path):
    """The control given as Chimera's trilinear map has no error; maps are read from files; a
    subset evaluates that many control voxels; a trilinear map on another grid is refused."""
    coarse, fine, _ = chimera_like_maps()
    paths = {}
    for name, vmap in (("coarse", coarse), ("fine", fine)):
        paths[name] = tmp_path / f"{name}.mrc"
        write_map(paths[name], vmap)
    r = chimera_experiment(
        paths["coarse"],
        paths["fine"],
        paths["fine"],
        resolution_A=3.0,
        methods=["trilinear"],
        max_eval_points=1000,
        seed=1,
    )
    assert r["evaluated_points"] == 1000
    err = r["methods"]["trilinear"]["common"]
    assert err["all"]["n"] == 1000 and err["all"]["max_abs"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="coarse.mrc: grid"):
        chimera_experiment(
            paths["coarse"], paths["fine"], paths["coarse"], resolution_A=3.0, methods=["trilinear"]
        )
