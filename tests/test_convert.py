"""Tests of ``neural-em convert``: original-study archives (tar of torch.save files) to the
safe format, and refusal of archives that would run code."""

from __future__ import annotations

import io
import pickle
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_neural_field

from neural_em.cli.convert import convert_study_file
from neural_em.cli.main import main
from neural_em.errors import InputError
from neural_em.fields import load_field
from neural_em.fields.neural import NeuralDensityMap

SHAPE = (30, 26, 20)
VOXEL = (1.1, 1.0, 0.9)
ORIGIN = (5.0, -3.0, 12.0)


def reference_field() -> NeuralDensityMap:
    return random_neural_field(
        SHAPE,
        voxel_size=VOXEL,
        origin=ORIGIN,
        size=16,
        widths=(3, 32, 32, 32, 1),
        seed=11,
        preset="paper",
    )


def state_dict(field: NeuralDensityMap, r: int) -> OrderedDict:
    """A SIREN state dict as an nn.Sequential of sine layers would name it."""
    sd = OrderedDict()
    n = len(field.weights)
    for k in range(n):
        prefix = f"net.{k}.linear." if k < n - 1 else f"net.{k}."
        sd[prefix + "weight"] = torch.from_numpy(field.weights[k][r].copy())
        sd[prefix + "bias"] = torch.from_numpy(field.biases[k][r].copy())
    return sd


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def build_archive(
    path: Path,
    field: NeuralDensityMap,
    *,
    layout: str = "boxes_in_members",
    extra: dict[str, bytes] | None = None,
) -> Path:
    boxes = field.tiling.boxes()
    with tarfile.open(path, "w") as tar:
        meta = {
            "shape_xyz": list(SHAPE),
            "voxel_size": list(VOXEL),
            "origin": list(ORIGIN),
            "map_id": "synthetic",
        }
        if layout == "boxes_in_metadata":
            meta["regions"] = [[list(lo), list(hi)] for lo, hi in boxes]
        add_member(tar, "map/metadata.pt", torch_bytes(meta))
        for r, (lo, hi) in enumerate(boxes):
            if layout == "boxes_in_members":
                obj = {
                    "state_dict": state_dict(field, r),
                    "box": torch.tensor([list(lo), list(hi)]),
                }
            else:
                obj = state_dict(field, r)
            add_member(tar, f"map/region_{r}.pt", torch_bytes(obj))
        for name, payload in (extra or {}).items():
            add_member(tar, name, payload)
    return path


@pytest.mark.parametrize("layout", ["boxes_in_members", "boxes_in_metadata"])
def test_convert_round_trip(tmp_path, layout):
    ref = reference_field()
    archive = build_archive(tmp_path / "old.neural", ref, layout=layout)
    out = tmp_path / "new.neural"
    assert main(["-q", "convert", str(archive), "-o", str(out)]) == 0
    field = load_field(out)
    assert field.kind == "neural" and field.preset == "converted"
    assert field.map_id == "synthetic"
    np.testing.assert_allclose(field.voxel_size, VOXEL)
    np.testing.assert_allclose(field.origin, ORIGIN)
    p = np.random.default_rng(0).uniform(*ref.bounds, size=(300, 3))
    np.testing.assert_array_equal(field.get_values(p), ref.get_values(p))
    assert main(["-q", "convert", str(archive), "-o", str(out)]) == 2  # exists, no --force


def test_convert_with_missing_regions_counts_them_empty(tmp_path):
    ref = reference_field()
    boxes = ref.tiling.boxes()
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w") as tar:
        add_member(
            tar, "meta.json", b'{"voxel_size": 1.0, "origin": [0, 0, 0], "shape_xyz": [30, 26, 20]}'
        )
        nx, ny, nz = ref.tiling.grid_shape
        keep = sorted(
            {(k % nz) * ny * nx + (k % ny) * nx + (k % nx) for k in range(max(nx, ny, nz))}
        )  # every tile of every axis used
        for r in keep:
            add_member(
                tar,
                f"r{r}.pt",
                torch_bytes(
                    {"model": state_dict(ref, r), "lo": list(boxes[r][0]), "hi": list(boxes[r][1])}
                ),
            )
    field = convert_study_file(path)
    stops = [rec["stop"] for rec in field.metadata["training"]["regions"]]
    assert stops.count("converged") == len(keep) and stops.count("empty") == len(boxes) - len(keep)
    assert len(keep) < len(boxes)
    empty_box = next(b for k, b in enumerate(boxes) if k not in keep)
    centre = ref.origin + (np.array(empty_box[0]) + np.array(empty_box[1]) - 1) / 2 * ref.voxel_size
    assert field.get_values(centre)[0, 0] == 0.0


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("how", ["plain_pickle", "torch_save"])
def test_malicious_member_is_refused_and_runs_no_code(tmp_path, capsys, how):
    marker = tmp_path / "marker"
    payload = (
        pickle.dumps(_Marker(str(marker)))
        if how == "plain_pickle"
        else torch_bytes({"state": _Marker(str(marker))})
    )
    assert not marker.exists()
    archive = build_archive(
        tmp_path / "old.neural", reference_field(), extra={"map/region_99.pt": payload}
    )
    out = tmp_path / "new.neural"
    code = main(["convert", str(archive), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "region_99.pt" in err and "weights_only" in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists() and not out.exists()


def test_refuses_what_it_cannot_map(tmp_path):
    ref = reference_field()
    boxes = ref.tiling.boxes()
    not_tar = tmp_path / "x.neural"
    not_tar.write_bytes(b"hello, not a tar archive at all" * 20)
    with pytest.raises(InputError, match="not a tar"):
        convert_study_file(not_tar)
    # A state dict whose network does not map 3 coordinates to 1 density.
    bad = tmp_path / "bad.tar"
    sd = state_dict(ref, 0)
    sd["net.0.linear.weight"] = torch.zeros(32, 2)
    with tarfile.open(bad, "w") as tar:
        add_member(
            tar,
            "r0.pt",
            torch_bytes({"state_dict": sd, "box": [list(boxes[0][0]), list(boxes[0][1])]}),
        )
    with pytest.raises(InputError, match="not 3 coordinates|do not chain"):
        convert_study_file(bad, voxel_size=1.0)
    # No box anywhere.
    nobox = tmp_path / "nobox.tar"
    with tarfile.open(nobox, "w") as tar:
        add_member(tar, "r0.pt", torch_bytes(state_dict(ref, 0)))
    with pytest.raises(InputError, match="no region box"):
        convert_study_file(nobox, voxel_size=1.0)
    # A member that is neither a state dict nor metadata.
    odd = tmp_path / "odd.tar"
    with tarfile.open(odd, "w") as tar:
        add_member(tar, "r0.pt", torch_bytes([1, 2, 3]))
    with pytest.raises(InputError, match="neither a state dict"):
        convert_study_file(odd, voxel_size=1.0)
    # Without a voxel size.
    novs = tmp_path / "novs.tar"
    with tarfile.open(novs, "w") as tar:
        add_member(
            tar,
            "r0.pt",
            torch_bytes(
                {"state_dict": state_dict(ref, 0), "box": [list(boxes[0][0]), list(boxes[0][1])]}
            ),
        )
    with pytest.raises(InputError, match="voxel size"):
        convert_study_file(novs)
    # Truncated archive.
    good = build_archive(tmp_path / "good.tar", ref)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(InputError):
        convert_study_file(cut)
