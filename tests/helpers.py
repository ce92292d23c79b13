"""Shared test helpers: the real-data folder beside the repository, small synthetic maps and
the counts the reliability tests leave for the test report. Tests import them
(``from helpers import ...``); fixtures belong in ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neural_em.voxelmap import VoxelMap

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: The study's published tables, kept in the repository (data/reference/README.md).
SHARED_REFERENCE = REPO / "data" / "reference"


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
