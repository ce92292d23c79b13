"""The .neural file format: safe loading and clear refusals."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile

import numpy as np
import pytest
import safetensors.numpy
from helpers import hot_voxel_map

from neural_em.errors import FieldFormatError
from neural_em.fields import SplineDensityMap, load_field
from neural_em.fields.fileformat import is_field_file, read_field_file, write_field_file


@pytest.fixture
def saved(tmp_path):
    return SplineDensityMap(hot_voxel_map()).save(tmp_path / "f.neural")


def test_header_holds_the_metadata(saved):
    header, tensors = read_field_file(saved)
    assert header["kind"] == "spline"
    assert header["shape_xyz"] == [6, 7, 8]
    assert header["voxel_size"] == pytest.approx([1.1, 0.9, 1.3])
    assert header["normalisation"]["clip_max"] == 1.0
    assert tensors["volume"].shape == (8, 7, 6)


def test_truncated_file_is_refused(saved, tmp_path):
    raw = saved.read_bytes()
    for cut in (4, 20, len(raw) // 2, len(raw) - 1):
        bad = tmp_path / f"cut{cut}.neural"
        bad.write_bytes(raw[:cut])
        with pytest.raises(FieldFormatError, match="truncated|not a neural-em"):
            load_field(bad)


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "marker"
    bad = tmp_path / "evil.neural"
    bad.write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(FieldFormatError, match="pickle"):
        load_field(bad)
    assert not marker.exists()


def test_tar_of_the_original_study_is_refused_with_a_pointer_to_convert(tmp_path):
    bad = tmp_path / "old.neural"
    with tarfile.open(bad, "w") as tar:
        payload = b"x" * 100
        info = tarfile.TarInfo("model_0.pt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(FieldFormatError, match="convert"):
        load_field(bad)


def test_foreign_safetensors_and_versions(tmp_path):
    plain = tmp_path / "plain.neural"
    plain.write_bytes(safetensors.numpy.save({"a": np.zeros(3, dtype=np.float32)}))
    with pytest.raises(FieldFormatError, match="not written by neural-em"):
        load_field(plain)
    future = tmp_path / "future.neural"
    future.write_bytes(
        safetensors.numpy.save(
            {"a": np.zeros(3, dtype=np.float32)},
            metadata={"format": "neural-em", "format_version": "99", "header": "{}"},
        )
    )
    with pytest.raises(FieldFormatError, match="unknown format version"):
        load_field(future)


def test_nan_tensors_and_wrong_shapes(tmp_path, saved):
    header, tensors = read_field_file(saved)
    nan = dict(tensors, volume=np.full_like(tensors["volume"], np.nan))
    with pytest.raises(FieldFormatError, match="NaN"):
        load_field(write_field_file(tmp_path / "nan.neural", header, nan))
    wrong = dict(tensors, volume=tensors["volume"][:, :, :3])
    with pytest.raises(FieldFormatError, match="shaped like"):
        load_field(write_field_file(tmp_path / "shape.neural", header, wrong))
    typed = dict(header, voxel_size="big")
    with pytest.raises(FieldFormatError, match="voxel_size"):
        load_field(write_field_file(tmp_path / "type.neural", typed, tensors))
    kind = dict(header, kind="teapot")
    with pytest.raises(FieldFormatError, match="unknown field kind"):
        load_field(write_field_file(tmp_path / "kind.neural", kind, tensors))


def test_corrupt_header_json(tmp_path):
    body = b"{not json"
    bad = tmp_path / "corrupt.neural"
    bad.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(FieldFormatError, match="corrupt"):
        load_field(bad)
    bad.write_bytes(json.dumps({"x": 1}).encode())
    with pytest.raises(FieldFormatError, match="JSON file"):
        load_field(bad)


def test_is_field_file_by_suffix_or_first_bytes(saved, tmp_path):
    from neural_em.voxelmap import write_map

    assert is_field_file(saved)
    renamed = tmp_path / "field.bin"
    renamed.write_bytes(saved.read_bytes())
    assert is_field_file(renamed)  # a safetensors JSON header, whatever the name
    assert not is_field_file(write_map(tmp_path / "m.mrc", hot_voxel_map()))
    (tmp_path / "p.bin").write_bytes(pickle.dumps({"x": 1}))
    assert not is_field_file(tmp_path / "p.bin")
    assert not is_field_file(tmp_path / "absent.bin")
    assert is_field_file(tmp_path / "absent.neural")  # the suffix alone decides
