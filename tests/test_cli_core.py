"""Command line: info, fit --field spline, resample, query; exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
from helpers import hot_voxel_map, shared_file

from neural_em.cli.main import main
from neural_em.fields import load_field
from neural_em.voxelmap import read_map, write_map


@pytest.fixture
def hot_map(tmp_path):
    return write_map(tmp_path / "hot.mrc", hot_voxel_map())


def test_info_json_for_map_and_field(hot_map, tmp_path, capsys):
    assert main(["info", str(hot_map), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape_xyz"] == [6, 7, 8]
    assert info["origin"] == pytest.approx([10.0, -4.0, 2.5])
    assert info["axis_order"] == [1, 2, 3]
    out = tmp_path / "hot.neural"
    assert main(["-q", "fit", str(hot_map), "--field", "spline", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "spline"
    assert info["bytes"] == out.stat().st_size
    assert info["parameters"] == 6 * 7 * 8
    for key in ("shape_xyz", "voxel_size", "origin", "axis_order", "preset", "regions"):
        assert key in info


def test_info_real_map_axes(capsys):
    path = shared_file("emd_3001/EMD-3001.map")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["axis_order"] == [3, 1, 2]
    assert info["shape_xyz"] == [43, 25, 73]


def test_fit_resample_query_roundtrip(hot_map, tmp_path, capsys):
    field_path = tmp_path / "f.neural"
    assert main(["-q", "fit", str(hot_map), "--field", "spline", "-o", str(field_path)]) == 0
    mrc = tmp_path / "r.mrc"
    assert main(["resample", str(field_path), "-o", str(mrc)]) == 0
    assert mrcfile.validate(str(mrc), print_file=open("/dev/null", "w"))  # noqa: SIM115
    back = read_map(mrc)
    np.testing.assert_allclose(back.data, hot_voxel_map().data, atol=1e-6)
    np.testing.assert_allclose(back.origin, [10.0, -4.0, 2.5], atol=1e-5)
    half = tmp_path / "half.mrc"
    assert main(["resample", str(field_path), "-o", str(half), "--voxel-size", "0.5"]) == 0
    assert read_map(half).voxel_size == pytest.approx([0.5, 0.5, 0.5])
    pts = tmp_path / "p.csv"
    hot = np.array([10.0 + 1.1, -4.0 + 1.8, 2.5 + 3.9])
    pts.write_text(f"x,y,z\n{hot[0]},{hot[1]},{hot[2]}\n0,0,0\n")
    vals = tmp_path / "v.csv"
    assert main(["query", str(field_path), str(pts), "-o", str(vals)]) == 0
    rows = vals.read_text().strip().splitlines()
    assert rows[0] == "x,y,z,density,grad_x,grad_y,grad_z"
    assert float(rows[1].split(",")[3]) == pytest.approx(1.0, abs=1e-6)
    assert rows[2].split(",")[3] == "nan"
    field = load_field(field_path)
    assert field.get_densities(hot)[0] == pytest.approx(1.0, abs=1e-6)


def test_bad_input_exit_code_2_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.mrc"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0]
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"\x00" * 100)
    assert main(["fit", str(junk), "--field", "spline", "-o", str(tmp_path / "o.neural")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.mrc" in err[0]
    assert not (tmp_path / "o.neural").exists()


def test_never_overwrites_without_force(hot_map, tmp_path, capsys):
    out = tmp_path / "f.neural"
    assert main(["-q", "fit", str(hot_map), "--field", "spline", "-o", str(out)]) == 0
    before = out.read_bytes()
    assert main(["-q", "fit", str(hot_map), "--field", "spline", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["-q", "fit", str(hot_map), "--field", "spline", "-o", str(out), "--force"]) == 0


def test_console_script_help_shows_examples():
    for command in ("info", "fit", "resample", "query"):
        result = subprocess.run(
            [sys.executable, "-m", "neural_em.cli.main", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "example:" in result.stdout
        assert "neural-em " + command in result.stdout
