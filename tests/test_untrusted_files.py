"""Untrusted files never run code and are refused with one clear line.

Crafted files: pickles whose unpickling would create a marker file (plain, in a torch.save zip,
in a tar like the original study's ``.neural``, gzipped, as an object ``.npy`` inside an npz),
torch.save archives, tar archives, truncated or corrupt safetensors, headers with wrong types
or shapes, NaN weights, unknown format versions; as ``.neural`` fields (``load_field`` and
``neural-em info/resample/query/graph``), graph JSON and npz, maps and models. The marker
must never appear. Counts go to ``$NEURAL_EM_TEST_REPORT_DIR/untrusted_files.json``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from helpers import gaussian_blobs, save_counts

from neural_em.cli.main import main
from neural_em.errors import InputError
from neural_em.fields import SplineDensityMap, load_field
from neural_em.fields.fileformat import FORMAT_NAME, FORMAT_VERSION

REPO = Path(__file__).resolve().parents[1]
HAS_NEURAL = importlib.util.find_spec("neural_em.fields.neural") is not None
HAS_GRAPH = importlib.util.find_spec("neural_em.graph.export") is not None
HAS_GRAPH_CLI = importlib.util.find_spec("neural_em.cli.graph") is not None
HAS_EVALUATE = importlib.util.find_spec("neural_em.cli.evaluate") is not None
HAS_CONVERT = importlib.util.find_spec("neural_em.cli.convert") is not None
HAS_MODELS = importlib.util.find_spec("neural_em.models") is not None

COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    save_counts(request, "untrusted_files", COUNTS)


# ---------------------------------------------------------------------------- payloads
class MarkerPayload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class TouchPayload:
    """A second gadget: ``pathlib.Path(marker).touch()`` through ``__reduce__``."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER_code_ran"
    yield path
    assert not path.exists(), "a crafted file executed code: the marker file was created"


def _check_payload_works(marker: Path) -> None:
    """Prove the payload is live: unpickling it here does create the marker."""
    pickle.loads(pickle.dumps(MarkerPayload(marker)))
    assert marker.exists()
    marker.unlink()


def pickle_payloads(marker: Path) -> dict[str, bytes]:
    """Crafted files that run code when unpickled (or torch.load'ed without weights_only)."""
    out = {}
    for proto in (0, 2, 4, 5):
        out[f"pickle_p{proto}"] = pickle.dumps({"weights": MarkerPayload(marker)}, protocol=proto)
    out["pickle_touch"] = pickle.dumps([TouchPayload(marker)])
    out["pickle_gzip"] = gzip.compress(pickle.dumps(MarkerPayload(marker)))
    # A torch.save-style zip archive whose data.pkl holds the payload.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"state": MarkerPayload(marker)}, protocol=2))
        zf.writestr("archive/version", "3\n")
    out["torch_zip_payload"] = buf.getvalue()
    # A tar of pickles, like the original study's .neural files.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("model_0.pt", "metadata.pkl"):
            data = pickle.dumps(MarkerPayload(marker))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out["tar_of_pickles"] = buf.getvalue()
    # An 8-byte length prefix and '{' before a pickle: looks like safetensors at a glance.
    body = b'{"__metadata__":' + pickle.dumps(MarkerPayload(marker))
    out["safetensors_prefix_pickle"] = struct.pack("<Q", len(body)) + body
    # A numpy object array (pickled inside .npy), alone and inside an npz.
    buf = io.BytesIO()
    np.save(buf, np.array([MarkerPayload(marker)], dtype=object), allow_pickle=True)
    out["npy_object"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, positions=np.array([MarkerPayload(marker)], dtype=object))
    out["npz_object"] = buf.getvalue()
    return out


def torch_save_bytes() -> bytes | None:
    """A genuine torch.save zip of tensors (not code, but not a neural-em file)."""
    try:
        import torch
    except ImportError:
        return None
    buf = io.BytesIO()
    torch.save({"net.0.weight": torch.zeros(4, 3)}, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------- helpers
def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, path: Path, argv: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    what = f"neural-em {' '.join(argv)}"
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    assert code == 2, f"{what}: exit {code}; stderr {err!r}"
    assert len(lines) == 1, f"{what}: expected one stderr line, got {lines!r}"
    assert "internal error" not in lines[0], lines[0]
    assert str(path) in lines[0], f"{what}: does not name the file: {lines[0]}"


def field_commands(path: Path, tmp: Path) -> list[list[str]]:
    points = tmp / "points.csv"
    points.write_text("x,y,z\n1,2,3\n")
    cmds = [
        ["info", str(path)],
        ["info", str(path), "--json"],
        ["resample", str(path), "-o", str(tmp / "r.mrc")],
        ["query", str(path), str(points), "-o", str(tmp / "q.csv")],
    ]
    if HAS_GRAPH_CLI:
        cmds.append(["graph", str(path), "-o", str(tmp / "g.graph.json")])
    return cmds


def refuse_everywhere_as_field(path: Path, tmp: Path, capsys, *, counter: str) -> None:
    """``load_field`` raises InputError; every field command exits 2 with one line."""
    with pytest.raises(InputError) as info:
        load_field(path)
    assert str(path) in str(info.value)
    for argv in field_commands(path, tmp):
        code, err = run_cli(capsys, argv)
        assert_refused(code, err, path, argv)
        COUNTS[f"{counter}_cli_refusals"] += 1
    assert not (tmp / "r.mrc").exists() and not (tmp / "q.csv").exists()
    COUNTS[counter] += 1


# ---------------------------------------------------------------------------- crafted code
def test_marker_payload_is_live(tmp_path):
    """The payload really runs code when unpickled (so the tests below prove something)."""
    marker = tmp_path / "live"
    _check_payload_works(marker)


@pytest.mark.parametrize("suffix", [".neural", ".bin"])
def test_pickles_as_fields_never_run(suffix, tmp_path, capsys, marker):
    for name, content in pickle_payloads(marker).items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        refuse_everywhere_as_field(path, tmp_path, capsys, counter="crafted_code_files_refused")
        COUNTS["crafted_code_files"] += 1
        assert not marker.exists(), f"{name}: code ran"


def test_pickles_as_maps_never_run(tmp_path, capsys, marker):
    for name, content in pickle_payloads(marker).items():
        path = tmp_path / f"{name}.mrc"
        path.write_bytes(content)
        for argv in (
            ["info", str(path)],
            ["fit", str(path), "--field", "spline", "-o", str(tmp_path / "x.neural")],
        ):
            code, err = run_cli(capsys, argv)
            assert_refused(code, err, path, argv)
        COUNTS["crafted_code_files"] += 1
        COUNTS["crafted_code_files_refused"] += 1
        assert not marker.exists(), f"{name}: code ran"


@pytest.mark.skipif(not HAS_GRAPH, reason="graph module (neural_em.graph.export) not present")
def test_pickles_as_graphs_never_run(tmp_path, capsys, marker):
    from neural_em.graph.density_graph import DensityGraph
    from neural_em.graph.export import load_npz

    for name, content in pickle_payloads(marker).items():
        for suffix in (".graph.json", ".npz", ".gpickle"):
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(content)
            loader = load_npz if suffix == ".npz" else DensityGraph.load
            with pytest.raises(InputError) as info:
                loader(path)
            assert str(path) in str(info.value)
            if HAS_EVALUATE and suffix == ".graph.json":
                model = tmp_path / "m.pdb"
                model.write_text(PDB_ONE_CA)
                argv = ["evaluate", str(path), "--model", str(model), "--no-baseline"]
                code, err = run_cli(capsys, argv)
                assert_refused(code, err, path, argv)
            COUNTS["crafted_code_files"] += 1
            COUNTS["crafted_code_files_refused"] += 1
            assert not marker.exists(), f"{name}{suffix}: code ran"


@pytest.mark.skipif(not HAS_MODELS, reason="neural_em.models not present")
def test_pickles_as_models_never_run(tmp_path, marker):
    from neural_em.models import read_model

    for name, content in pickle_payloads(marker).items():
        for suffix in (".pdb", ".cif"):
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(content)
            with pytest.raises(InputError) as info:
                read_model(path)
            assert str(path) in str(info.value)
            COUNTS["crafted_code_files"] += 1
            COUNTS["crafted_code_files_refused"] += 1
            assert not marker.exists()


@pytest.mark.skipif(not HAS_CONVERT, reason="neural-em convert not present yet")
def test_convert_never_runs_pickled_code(tmp_path, capsys, marker):
    """``neural-em convert`` reads the original study's files with weights_only=True only."""
    for name, content in pickle_payloads(marker).items():
        if name.startswith(("npy", "npz")):
            continue
        path = tmp_path / f"{name}.neural"
        path.write_bytes(content)
        out = tmp_path / f"{name}.converted.neural"
        argv = ["convert", str(path), "-o", str(out)]
        code, err = run_cli(capsys, argv)
        assert_refused(code, err, path, argv)
        assert not out.exists()
        COUNTS["crafted_code_files"] += 1
        COUNTS["crafted_code_files_refused"] += 1
        assert not marker.exists(), f"{name}: code ran in convert"


# ---------------------------------------------------------------------------- foreign formats
def test_foreign_formats_are_named(tmp_path, capsys):
    """torch.save zips, tars and other formats: refused, saying what the file is."""
    cases = {
        "tar": None,
        "zip": None,
        "gzip": gzip.compress(b"hello"),
        "json": b'{"kind": "spline"}',
        "empty": b"",
        "short": b"\x01\x02",
        "text": b"just some text\n" * 10,
    }
    torch_bytes = torch_save_bytes()
    if torch_bytes is not None:
        cases["torch_save"] = torch_bytes
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("weights.npy")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"abcd"))
    cases["tar"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "x")
    cases["zip"] = buf.getvalue()
    expected = {"tar": "tar", "zip": "zip", "torch_save": "zip", "gzip": "gzip", "json": "json"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.neural"
        path.write_bytes(content)
        with pytest.raises(InputError) as info:
            load_field(path)
        if name in expected:
            assert expected[name] in str(info.value).lower(), str(info.value)
        refuse_everywhere_as_field(path, tmp_path, capsys, counter="malformed_field_files")


# ---------------------------------------------------------------------------- safetensors
@pytest.fixture(scope="module")
def spline_file(tmp_path_factory) -> Path:
    vmap = gaussian_blobs([[6.0, 7.0, 5.0], [10.0, 9.0, 8.0]], shape_xyz=(14, 13, 12))
    path = tmp_path_factory.mktemp("spline") / "good.neural"
    SplineDensityMap(vmap.normalised()).save(path)
    return path


@pytest.fixture(scope="module")
def neural_file(tmp_path_factory) -> Path:
    if not HAS_NEURAL:
        pytest.skip("neural module (neural_em.fields.neural) not present yet")
    import mrcfile

    tmp = tmp_path_factory.mktemp("neural")
    vmap = gaussian_blobs([[6.0, 7.0, 5.0], [10.0, 9.0, 8.0]], shape_xyz=(14, 13, 12))
    map_path = tmp / "tiny.mrc"
    with mrcfile.new(map_path) as mrc:
        mrc.set_data(vmap.data)
        mrc.voxel_size = 1.0
    out = tmp / "tiny.neural"
    code = main(["-q", "fit", str(map_path), "-o", str(out), "--max-epochs", "3"])
    assert code == 0 and out.exists()
    return out


def _field_file_variants(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    out = {}
    for frac in (0.0, 0.001, 0.01, 0.3, 0.5, 0.9, 0.999):
        out[f"truncated_{frac}"] = data[: int(len(data) * frac)]
    out["truncated_minus_1"] = data[:-1]
    out["header_cut"] = data[: 8 + n // 2]
    out["length_huge"] = struct.pack("<Q", 2**62) + data[8:]
    out["length_zero"] = struct.pack("<Q", 0) + data[8:]
    out["length_short"] = struct.pack("<Q", n - 5) + data[8:]
    out["length_long"] = struct.pack("<Q", n + 7) + data[8:]
    header = bytearray(data[8 : 8 + n])
    # Break the JSON at a colon (outer header, or the JSON metadata inside its string).
    colons = [i for i, c in enumerate(header) if c == ord(":")]
    for i, pos in enumerate((1, colons[len(colons) // 3], colons[len(colons) // 2], colons[-1])):
        bad = bytearray(header)
        bad[pos] = ord("#")
        out[f"header_flip_{i}"] = data[:8] + bytes(bad) + data[8 + n :]
    out["not_utf8"] = data[:8] + b"\xff" * n + data[8 + n :]
    out["header_array"] = struct.pack("<Q", 2) + b"[]"
    return out


@pytest.mark.parametrize("which", ["spline", "neural"])
def test_truncated_and_corrupt_safetensors(which, request, tmp_path, capsys):
    good = request.getfixturevalue(f"{which}_file")
    load_field(good)  # the intact file loads
    for name, content in _field_file_variants(good).items():
        path = tmp_path / f"{which}_{name}.neural"
        path.write_bytes(content)
        refuse_everywhere_as_field(path, tmp_path, capsys, counter="malformed_field_files")


def _rewrite(path: Path, out: Path, *, header=None, tensors=None, meta=None) -> None:
    """Write a neural-em file from (possibly altered) parts of ``path``."""
    from neural_em.fields.fileformat import read_field_file

    h, t = read_field_file(path)
    h = h if header is None else header(h)
    t = t if tensors is None else tensors(t)
    m = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "header": json.dumps(h)}
    if meta is not None:
        m = meta(m)
    out.write_bytes(safetensors.numpy.save(t, metadata=m))


WRONG_VALUES = [
    "text",
    None,
    [],
    {},
    -1,
    0,
    1.5,
    [1, 2],
    [[1, 2, 3]],
    ["a", "b", "c"],
    [0, 0, 0],
    [-1.0, 1.0, 1.0],
    [1e308, 1e308, 1e308],
    True,
]


@pytest.mark.parametrize("which", ["spline", "neural"])
def test_header_values_of_wrong_type_are_refused_or_harmless(which, request, tmp_path, capsys):
    """Every header key given every wrong value: refused with InputError, or (for keys that
    are only information) loaded into a field that still answers finite values in its box.
    Never another exception."""
    from neural_em.fields.fileformat import read_field_file

    good = request.getfixturevalue(f"{which}_file")
    header, tensors = read_field_file(good)
    keys = sorted(header)
    refused = harmless = 0
    for key in keys:
        for k, value in enumerate(WRONG_VALUES):
            path = tmp_path / f"{which}_{key}_{k}.neural"

            def alter(h, key=key, value=value):
                h = dict(h)
                h[key] = value
                return h

            _rewrite(good, path, header=alter)
            try:
                field = load_field(path)
            except InputError as exc:
                assert str(path) in str(exc), str(exc)
                refused += 1
                continue
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"header[{key!r}] = {value!r}: {type(exc).__name__}: {exc}")
            lo, hi = field.bounds
            pts = lo + (hi - lo) * np.random.default_rng(0).random((50, 3))
            values = field.get_values(pts)
            assert np.all(np.isfinite(values)), f"header[{key!r}] = {value!r} gave NaNs"
            harmless += 1
        # Missing key too.
        path = tmp_path / f"{which}_{key}_missing.neural"
        _rewrite(good, path, header=lambda h, key=key: {k: v for k, v in h.items() if k != key})
        try:
            load_field(path)
            harmless += 1
        except InputError:
            refused += 1
    COUNTS["header_mutations"] += refused + harmless
    COUNTS["header_mutations_refused"] += refused
    COUNTS["header_mutations_harmless"] += harmless
    # The geometry keys cannot all be harmless.
    assert refused >= 3 * len(WRONG_VALUES)


@pytest.mark.parametrize("which", ["spline", "neural"])
def test_tensor_shapes_nan_and_versions(which, request, tmp_path, capsys):
    good = request.getfixturevalue(f"{which}_file")
    variants = {}

    def nan_first(t):
        t = {k: v.copy() for k, v in t.items()}
        name = next(k for k, v in t.items() if v.dtype.kind == "f")
        t[name].reshape(-1)[0] = np.nan
        return t

    def inf_last(t):
        t = {k: v.copy() for k, v in t.items()}
        name = [k for k, v in t.items() if v.dtype.kind == "f"][-1]
        t[name].reshape(-1)[-1] = np.inf
        return t

    def drop_dim(t):
        return {k: (v.reshape(-1) if v.ndim > 1 else v.reshape(1, -1)) for k, v in t.items()}

    def shrink(t):
        return {
            k: v[..., :-1].copy() if v.shape[-1] > 1 else np.zeros((0,), v.dtype)
            for k, v in t.items()
        }

    def drop_all(t):
        return {"unrelated": np.zeros(3, np.float32)}

    for name, fn in {
        "nan": nan_first,
        "inf": inf_last,
        "drop_dim": drop_dim,
        "shrink": shrink,
        "no_tensors": drop_all,
    }.items():
        variants[name] = {"tensors": fn}
    for version in ("2", "0", "1.0", "", "999"):
        variants[f"version_{version or 'empty'}"] = {
            "meta": lambda m, v=version: {**m, "format_version": v}
        }
    variants["version_missing"] = {
        "meta": lambda m: {k: v for k, v in m.items() if k != "format_version"}
    }
    variants["format_other"] = {"meta": lambda m: {**m, "format": "pytorch"}}
    variants["header_not_json"] = {"meta": lambda m: {**m, "header": "{not json"}}
    variants["header_list"] = {"meta": lambda m: {**m, "header": "[1, 2]"}}
    variants["header_nan"] = {
        "meta": lambda m: {**m, "header": m["header"].replace('"origin": [', '"origin": [NaN, ', 1)}
    }
    variants["kind_unknown"] = {"header": lambda h: {**h, "kind": "gaussian-process"}}
    if HAS_NEURAL:  # (without the neural module, load_field cannot try the other kind)
        variants["kind_other"] = {
            "header": lambda h: {**h, "kind": "neural" if h.get("kind") == "spline" else "spline"}
        }
    for name, parts in variants.items():
        path = tmp_path / f"{which}_{name}.neural"
        _rewrite(good, path, **parts)
        refuse_everywhere_as_field(path, tmp_path, capsys, counter="malformed_field_files")
    # A plain safetensors file not written by neural-em.
    path = tmp_path / "plain.neural"
    path.write_bytes(safetensors.numpy.save({"w": np.zeros(3, np.float32)}))
    refuse_everywhere_as_field(path, tmp_path, capsys, counter="malformed_field_files")


def test_safetensors_records_that_lie(tmp_path, capsys, spline_file):
    """Raw safetensors headers whose tensor records lie about dtype, shape or offsets."""
    data = spline_file.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    name = next(k for k in header if k != "__metadata__")
    lies = {
        "shape_huge": {"shape": [10**6, 10**6, 10**6]},
        "shape_negative": {"shape": [-1, 4, 4]},
        "dtype_unknown": {"dtype": "OBJECT"},
        "dtype_wider": {"dtype": "F64"},
        "offsets_reversed": {"data_offsets": [10, 0]},
        "offsets_beyond": {"data_offsets": [0, len(body) + 10**9]},
        "offsets_text": {"data_offsets": ["0", "4"]},
        "record_string": None,
    }
    for lie, change in lies.items():
        h = json.loads(json.dumps(header))
        h[name] = "not a record" if change is None else {**h[name], **change}
        raw = json.dumps(h).encode()
        path = tmp_path / f"lie_{lie}.neural"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
        refuse_everywhere_as_field(path, tmp_path, capsys, counter="malformed_field_files")


# ---------------------------------------------------------------------------- graphs
PDB_ONE_CA = (
    "ATOM      1  N   ALA A   1      10.000  10.000  10.000  1.00  0.00           N\n"
    "ATOM      2  CA  ALA A   1      11.000  10.000  10.000  1.00  0.00           C\n"
    "END\n"
)


@pytest.mark.skipif(not HAS_GRAPH, reason="graph module (neural_em.graph.export) not present")
def test_malformed_graph_json_and_npz(tmp_path, capsys):
    from neural_em.graph.density_graph import DensityGraph
    from neural_em.graph.export import load_npz

    node = {"id": 0, "x": 1.0, "y": 2.0, "z": 3.0, "density": 0.5}
    good = {
        "directed": False,
        "multigraph": False,
        "graph": {"map_id": "m"},
        "nodes": [node, {**node, "id": 1, "x": 2.0}],
        "edges": [{"source": 0, "target": 1, "length": 1.0}],
    }
    (tmp_path / "good.graph.json").write_text(json.dumps(good))
    assert len(DensityGraph.load(tmp_path / "good.graph.json")) == 2
    bad_json = {
        "not_json": "{nodes: [",
        "array": "[]",
        "nan_coordinate": json.dumps(good).replace('"x": 1.0', '"x": NaN', 1),
        "inf_coordinate": json.dumps(good).replace('"x": 1.0', '"x": Infinity', 1),
        "string_coordinate": json.dumps(good).replace('"x": 1.0', '"x": "1.0"', 1),
        "missing_z": json.dumps({**good, "nodes": [{"id": 0, "x": 1, "y": 2}]}),
        "nodes_dict": json.dumps({**good, "nodes": {"0": node}}),
        "edge_to_nowhere": json.dumps({**good, "edges": [{"source": 0, "target": 9}]}),
        "edge_negative_length": json.dumps(
            {**good, "edges": [{"source": 0, "target": 1, "length": -1}]}
        ),
        "node_id_string": json.dumps({**good, "nodes": [{**node, "id": "a"}], "edges": []}),
        "duplicate_nodes": json.dumps({**good, "nodes": [node, node], "edges": []}),
        "nested_attribute": json.dumps(
            {**good, "nodes": [{**node, "extra": {"a": 1}}], "edges": []}
        ),
        "directed": json.dumps({**good, "directed": True}),
        "future_version": json.dumps({**good, "graph": {"format_version": 999}}),
        "deep_nesting": "[" * 100_000 + "]" * 100_000,
        "binary": os.urandom(300).hex()[:5] + "\x00\xff",
        "empty": "",
    }
    model = tmp_path / "m.pdb"
    model.write_text(PDB_ONE_CA)
    for name, text in bad_json.items():
        path = tmp_path / f"{name}.graph.json"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(InputError) as info:
            DensityGraph.load(path)
        assert str(path) in str(info.value)
        if HAS_EVALUATE:
            argv = ["evaluate", str(path), "--model", str(model), "--no-baseline"]
            code, err = run_cli(capsys, argv)
            assert_refused(code, err, path, argv)
        COUNTS["malformed_graph_files"] += 1
    # npz
    n = 3
    arrays = {
        "positions": np.zeros((n, 3)),
        "features": np.zeros((n, 2), np.float32),
        "feature_names": np.array(["density", "gradient_norm"]),
        "edge_index": np.array([[0], [1]], np.int64),
        "edge_length": np.ones(1),
        "node_ids": np.arange(n),
        "density": np.ones(n),
        "gradient_norm": np.ones(n),
        "graph_attrs": np.array("{}"),
    }
    np.savez(tmp_path / "good.npz", **arrays)
    load_npz(tmp_path / "good.npz")
    bad_npz = {
        "positions_nan": {"positions": np.full((n, 3), np.nan)},
        "positions_2col": {"positions": np.zeros((n, 2))},
        "edge_out_of_range": {"edge_index": np.array([[0], [7]])},
        "edge_negative": {"edge_index": np.array([[-1], [0]])},
        "edge_shape": {"edge_index": np.zeros((3, 1), np.int64)},
        "self_loop": {"edge_index": np.array([[1], [1]])},
        "ids_repeat": {"node_ids": np.zeros(n, np.int64)},
        "density_inf": {"density": np.full(n, np.inf)},
        "features_shape": {"features": np.zeros((n, 5), np.float32)},
        "positions_text": {"positions": np.array(["a", "b", "c"])},
        "attrs_not_json": {"graph_attrs": np.array("{oops")},
        "lengths_mismatch": {"edge_length": np.ones(4)},
    }
    for name, change in bad_npz.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{**arrays, **change})
        with pytest.raises(InputError) as info:
            load_npz(path)
        assert str(path) in str(info.value)
        COUNTS["malformed_graph_files"] += 1
    missing = {k: v for k, v in arrays.items() if k != "edge_index"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(InputError):
        load_npz(tmp_path / "missing.npz")
    data = (tmp_path / "good.npz").read_bytes()
    for frac in (0.1, 0.5, 0.95):
        path = tmp_path / f"cut_{frac}.npz"
        path.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(InputError):
            load_npz(path)
        COUNTS["malformed_graph_files"] += 1


# ---------------------------------------------------------------------------- models
@pytest.mark.skipif(not HAS_MODELS, reason="neural_em.models not present")
def test_bad_models(tmp_path):
    from neural_em.models import read_model

    cases = {
        "empty.pdb": "",
        "garbage.pdb": "this is not a model\n" * 5,
        "no_ca.pdb": PDB_ONE_CA.replace(" CA ", " CB "),
        "calcium_only.pdb": "HETATM    1 CA    CA A   1      11.000  10.000  10.000  1.00  "
        "0.00          CA\nEND\n",
        "broken.cif": "data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n",
        "binary.cif": "\x00\x01\x02" * 50,
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="latin-1")
        with pytest.raises(InputError) as info:
            read_model(path)
        assert str(path) in str(info.value)
        COUNTS["malformed_model_files"] += 1


@pytest.mark.skipif(not (HAS_GRAPH and HAS_EVALUATE), reason="graph evaluation not present")
def test_model_outside_the_map_gives_defined_metrics(tmp_path, capsys):
    """A model far from every node: recall 0 and precision 0, not NaN or a crash."""
    node = {"x": 1.0, "y": 2.0, "z": 3.0, "density": 0.5}
    graph = {
        "directed": False,
        "multigraph": False,
        "graph": {"map_id": "m"},
        "nodes": [{**node, "id": i, "x": 1.0 + 3 * i} for i in range(4)],
        "edges": [],
    }
    path = tmp_path / "g.graph.json"
    path.write_text(json.dumps(graph))
    model = tmp_path / "far.pdb"
    model.write_text(PDB_ONE_CA.replace("11.000  10.000  10.000", "911.000 910.000 910.000"))
    code = main(["evaluate", str(path), "--model", str(model), "--no-baseline", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert result["recall"] == 0.0 and result["precision"] == 0.0
    assert result["nodes"] == 4 and result["ca"] == 1


@pytest.mark.skipif(not HAS_CONVERT, reason="neural-em convert not present yet")
def test_convert_refusal_is_one_line_in_a_real_process(tmp_path):
    """torch's weights_only loader warns about pickle protocol 4 on stderr; the refusal must
    still be one line (no warning text) in a real process."""
    import subprocess
    import sys

    marker = tmp_path / "MARKER"
    path = tmp_path / "tar_p4.neural"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = pickle.dumps(MarkerPayload(marker), protocol=4)
        info = tarfile.TarInfo("model_0.pt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neural_em.cli.main",
            "convert",
            str(path),
            "-o",
            str(tmp_path / "out.neural"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not marker.exists()
    assert proc.returncode == 2
    assert_refused(proc.returncode, proc.stderr, path, ["convert"])
