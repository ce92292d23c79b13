"""The registry of field kinds: every place that lists kinds derives them from it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import gaussian_blobs

from neural_em.cli.main import build_parser
from neural_em.errors import FieldFormatError, InputError
from neural_em.fields import FIELD_KINDS, fit_field, load_field
from neural_em.fields.fileformat import read_field_file, write_field_file
from neural_em.fields.spline import SplineDensityMap, SplineGridField
from neural_em.pipeline import collect, interpolation
from neural_em.voxelmap import write_map

REPO = Path(__file__).resolve().parents[1]
KINDS = ["spline", "trilinear", "fourier", "learned", "neural"]


def test_registry_names_its_classes():
    assert list(FIELD_KINDS) == KINDS
    for kind, cls in FIELD_KINDS.items():
        assert cls.kind == kind
    assert FIELD_KINDS["neural"].trained and not FIELD_KINDS["spline"].trained
    # the Fourier and learned fields are a spline on a finer grid, as the spline field is
    for kind in ("spline", "fourier", "learned"):
        assert issubclass(FIELD_KINDS[kind], SplineGridField)


def _choices(command: str, option: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return list(action.choices)


@pytest.mark.parametrize("command", ["fit", "graph"])
def test_cli_field_choices_are_the_registry(command):
    assert _choices(command, "--field") == KINDS


def test_schema_enums_are_the_registry():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    props = schema["properties"]
    assert props["graph"]["properties"]["fields"]["items"]["enum"] == KINDS
    assert props["interpolation"]["properties"]["methods"]["items"]["enum"] == KINDS


def test_pipeline_lists_come_from_the_registry():
    assert collect.GRAPH_FIELDS == tuple(KINDS)
    assert collect.FITTED_FIELDS == ("spline", "trilinear", "fourier", "learned")
    for kind in collect.FITTED_FIELDS:
        assert kind in collect.ROLES and f"{kind}_bench" in collect.ROLES
    assert interpolation.METHODS[: len(KINDS)] == tuple(KINDS)
    with pytest.raises(InputError, match="unknown interpolation method 'cubic'"):
        interpolation.build_field("cubic", gaussian_blobs([[5.0, 5.0, 5.0]], shape_xyz=(10,) * 3))


@pytest.mark.parametrize("kind", ["spline", "trilinear", "fourier"])
def test_fit_field_and_load_field_round_trip(kind, tmp_path):
    vmap = gaussian_blobs([[6.0, 7.0, 5.0], [10.0, 8.0, 9.0]], shape_xyz=(16, 15, 14))
    write_map(tmp_path / "m.mrc", vmap)
    field = fit_field(tmp_path / "m.mrc", kind, max_voxels=10**6)
    assert type(field) is FIELD_KINDS[kind] and field.max_voxels == 10**6
    field.save(tmp_path / "f.neural")
    back = load_field(tmp_path / "f.neural")
    assert type(back) is FIELD_KINDS[kind]
    pts = np.array([[6.2, 7.1, 5.3], [9.5, 8.5, 8.0]])
    np.testing.assert_array_equal(back.get_values(pts), field.get_values(pts))


def test_unknown_kinds_are_refused(tmp_path):
    with pytest.raises(InputError, match="field must be one of"):
        fit_field(tmp_path / "m.mrc", "cubic")
    field = SplineDensityMap(gaussian_blobs([[5.0, 5.0, 5.0]], shape_xyz=(10,) * 3))
    field.save(tmp_path / "f.neural")
    header, tensors = read_field_file(tmp_path / "f.neural")
    header["kind"] = "cubic"
    write_field_file(tmp_path / "g.neural", header, tensors)
    with pytest.raises(FieldFormatError, match="unknown field kind 'cubic'"):
        load_field(tmp_path / "g.neural")
