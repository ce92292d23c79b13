"""Shared test helpers: the real-data folder beside the repository, small synthetic maps and
fields, finite differences, and the counts the reliability tests leave for the test report. Tests import them
(``from helpers import ...``); fixtures belong in ``conftest.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from neural_em.voxelmap import VoxelMap

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: The study's published tables, kept in the repository (data/reference/README.md).
SHARED_REFERENCE = REPO / "data" / "reference"


def tool(name: str) -> ModuleType:
    """The developer tool ``tools/NAME.py`` as a module (tools sit outside the package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def shared_file(relative: str) -> Path:
    """Path of a file under ../shared/data; skips the test (naming the file) where absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real-data file {path} is absent (../shared/data not beside the repo)")
    return path


def reference_file(relative: str) -> Path:
    """Path of a file under data/reference; skips the test where absent."""
    path = SHARED_REFERENCE / relative
    if not path.is_file():
        pytest.skip(f"reference file {path} is absent")
    return path


def hot_voxel_map(
    shape_xyz=(6, 7, 8), hot_xyz=(1, 2, 3), voxel_size=(1.1, 0.9, 1.3), origin=(10.0, -4.0, 2.5)
) -> VoxelMap:
    """An asymmetric volume: zeros with one hot voxel at x=1, y=2, z=3."""
    nx, ny, nz = shape_xyz
    data = np.zeros((nz, ny, nx), dtype=np.float32)
    x, y, z = hot_xyz
    data[z, y, x] = 1.0
    return VoxelMap(data=data, voxel_size=voxel_size, origin=origin, map_id="hot")


def gaussian_blobs(
    centres_A, *, shape_xyz=(24, 22, 20), voxel_size=1.0, origin=0.0, sigma_A=1.5, amplitudes=None
) -> VoxelMap:
    """Gaussian blobs at known world positions (Å, x, y, z) on a grid."""
    vmap = VoxelMap(
        data=np.zeros(shape_xyz[::-1], dtype=np.float32),
        voxel_size=voxel_size,
        origin=origin,
        map_id="blobs",
    )
    pts = vmap.grid_points()
    dens = np.zeros(len(pts))
    amps = np.ones(len(centres_A)) if amplitudes is None else amplitudes
    for c, a in zip(np.atleast_2d(centres_A), amps, strict=True):
        dens += a * np.exp(-np.sum((pts - c) ** 2, axis=1) / (2 * sigma_A**2))
    vmap.data = dens.reshape(vmap.data.shape).astype(np.float32)
    return vmap


def random_neural_field(
    shape_xyz=(30, 26, 20),
    *,
    voxel_size=(1.0, 1.2, 0.9),
    origin=(3.0, 4.0, 5.0),
    size=12,
    overlap=4,
    widths=(3, 16, 16, 1),
    seed=0,
    preset="fast",
    softplus_beta=None,
    empty=None,
):
    """An untrained neural field with SIREN-initialised weights over several regions (a small
    ``softplus_beta`` puts the outputs on the curved part of the softplus). ``empty``: region
    indices left untrained, with a training record per region (None: the default records)."""
    import torch

    from neural_em.fields import siren
    from neural_em.fields.neural import NeuralDensityMap
    from neural_em.fields.regions import Tiling

    tiling = Tiling.plan(shape_xyz, size=size, overlap=overlap)
    n = len(tiling.boxes())
    untrained = set(empty or ())
    w, b = siren.init_siren(
        n - len(untrained), list(widths), generator=torch.Generator().manual_seed(seed)
    )
    records = None
    if empty is not None:
        records = [
            {
                "loss": None,
                "max_error": None,
                "epochs": 0,
                "best_epoch": 0,
                "seconds": 0.0,
                "stop": "empty" if r in untrained else "converged",
            }
            for r in range(n)
        ]
    return NeuralDensityMap.from_networks(
        tiling,
        [t.numpy() for t in w],
        [t.numpy() for t in b],
        voxel_size=voxel_size,
        origin=origin,
        preset=preset,
        softplus_beta=softplus_beta,
        records=records,
    )


def central_difference_gradients(field, points: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Gradients ``(n, 3)`` of ``field``'s densities at ``points`` by central differences of
    step ``h`` Å (float64)."""
    fd = np.empty((len(points), 3))
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = h
        fd[:, axis] = (
            field.get_densities(points + step).astype(np.float64)
            - field.get_densities(points - step)
        ) / (2 * h)
    return fd


def report_dir() -> Path:
    """Folder for the counts the reliability tests leave for ``tools/test_report.py``."""
    import os

    return Path(
        os.environ.get("NEURAL_EM_TEST_REPORT_DIR", REPO / "benchmarks" / "out" / "test_report")
    )


def save_counts(request, name: str, counts: dict) -> None:
    """Write ``counts`` to ``report_dir()/name.json`` atomically, unless this is a partial run
    (``-k``, ``-m``, node ids) which must not replace the full counts
    (``NEURAL_EM_TEST_REPORT_PARTIAL=1`` forces the write)."""
    import json
    import os

    config = request.config
    partial = (
        config.option.keyword or config.option.markexpr or any("::" in str(a) for a in config.args)
    )
    if partial and os.environ.get("NEURAL_EM_TEST_REPORT_PARTIAL") != "1":
        return
    folder = report_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(dict(counts), indent=2, sort_keys=True))
    os.replace(tmp, folder / f"{name}.json")
