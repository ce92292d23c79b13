"""Property-based fuzzing of MRC maps through the command line.

Hypothesis builds small valid maps (every supported mode, axis order, byte order, compression)
and breaks them: truncation, bad mode, zero/negative dimensions, a header claiming 10^12
voxels, NaN/Inf data, an axis order that is not a permutation, a non-positive cell, a negative
or huge extended header, a missing map identifier, a corrupt compressed stream, random bytes.
Every broken case must make ``info``, ``fit`` (spline, and neural with ``--max-epochs 1``
where that module exists) and ``graph`` (where it exists) exit with code 2 and print one line
on stderr naming the file and the problem: no traceback, no hang, no memory beyond what the
file holds. Odd but valid maps (NaN origin words, unknown machine stamp, trailing bytes, big-
endian, gzip/bzip2) must work, and resample through a spline ``.neural`` file to a valid MRC.
Counts go to ``$NEURAL_EM_TEST_REPORT_DIR/fuzz_maps.json`` for ``tools/test_report.py``.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib.util
import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from helpers import save_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neural_em.cli.main import main

REPO = Path(__file__).resolve().parents[1]
HAS_NEURAL = importlib.util.find_spec("neural_em.fields.neural") is not None
HAS_GRAPH = importlib.util.find_spec("neural_em.cli.graph") is not None

#: Seconds any single command may take on a tiny input before it counts as a hang.
HANG_S = 60
#: Peak-memory growth allowed per command: a constant plus a multiple of the decompressed
#: file size (float32 copies of int8 data, the spline coefficients in float64, ...).
MEM_BASE_MB = 96
MEM_FACTOR = 24
#: Hypothesis examples per kind of damage (14 kinds).
EXAMPLES_PER_KIND = 25

COUNTS: Counter = Counter()


# --------------------------------------------------------------------------- report
@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    counts = dict(COUNTS)
    counts["malformed_refused_cleanly"] = counts.get("malformed_refused_cleanly", 0)
    counts["commands"] = (
        ["info", "fit --field spline"]
        + (["fit (neural, --max-epochs 1)"] if HAS_NEURAL else [])
        + (["graph"] if HAS_GRAPH else [])
        + ["resample (valid cases)"]
    )
    save_counts(request, "fuzz_maps", counts)


# --------------------------------------------------------------------------- helpers
class Hang(BaseException):
    """Raised by the alarm; a BaseException so the CLI's own handlers do not swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def _alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_cli(capsys, argv: list[str], *, mem_bound_mb: float | None = None) -> tuple[int, str, str]:
    """Run ``neural-em argv`` in this process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    tracked = mem_bound_mb is not None and _reset_peak_rss()
    before = _rss_mb()
    try:
        with time_limit(HANG_S):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    if tracked:
        grown = _peak_rss_mb() - before
        assert grown <= mem_bound_mb, (
            f"neural-em {' '.join(argv)}: peak memory grew by {grown:.0f} MB, more than "
            f"{mem_bound_mb:.0f} MB for this file"
        )
    return code, out, err


def assert_clean_refusal(
    code: int, err: str, path: Path, keywords: tuple[str, ...], argv: list[str]
) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    what = f"neural-em {' '.join(argv)}"
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    assert code == 2, f"{what}: exit {code}, expected 2; stderr: {err!r}"
    assert len(lines) == 1, f"{what}: expected one line on stderr, got {lines!r}"
    line = lines[0]
    assert "internal error" not in line, f"{what}: {line}"
    assert str(path) in line, f"{what}: message does not name the file: {line}"
    low = line.lower()
    assert any(k.lower() in low for k in keywords), (
        f"{what}: message does not name the problem (one of {keywords}): {line}"
    )


# --------------------------------------------------------------------------- map bytes
OFF = {
    "nx": 0,
    "ny": 4,
    "nz": 8,
    "mode": 12,
    "nxstart": 16,
    "mx": 28,
    "my": 32,
    "mz": 36,
    "cella": 40,
    "mapc": 64,
    "mapr": 68,
    "maps": 72,
    "nsymbt": 92,
    "origin": 196,
    "map": 208,
    "machst": 212,
}
MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
PERMUTATIONS = [(1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)]


def valid_map_bytes(
    shape_crs: tuple[int, int, int],
    mode: int,
    axes: tuple[int, int, int],
    seed: int,
    *,
    constant: float | None = None,
    big_endian: bool = False,
) -> tuple[bytes, dict]:
    """A valid MRC file (bytes) of ``shape_crs`` columns, rows, sections."""
    nc, nr, ns = shape_crs
    rng = np.random.default_rng(seed)
    if constant is not None:
        data = np.full((ns, nr, nc), constant)
    elif mode in (0, 1):
        data = rng.integers(-100, 100, size=(ns, nr, nc))
    elif mode == 6:
        data = rng.integers(0, 1000, size=(ns, nr, nc))
    else:
        data = rng.normal(size=(ns, nr, nc)) + 2.0
    data = data.astype(MODES[mode])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.mrc"
        with mrcfile.new(path) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = (1.1, 0.9, 1.3)
            mrc.header.mapc, mrc.header.mapr, mrc.header.maps = axes
            mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = (3, -2, 7)
        raw = bytearray(path.read_bytes())
    # No labels: mrcfile writes a timestamp there, which would make compressed sizes (and so
    # hypothesis's draws) change from run to run.
    raw[220:1024] = bytes(804)
    raw = bytes(raw)
    if big_endian:
        header = np.frombuffer(raw[:1024], dtype=mrcfile.dtypes.HEADER_DTYPE).copy()
        be = header.astype(header.dtype.newbyteorder(">"))
        be["machst"] = [0x11, 0x11, 0, 0]
        body = data.astype(data.dtype.newbyteorder(">")).tobytes()
        raw = be.tobytes() + body
    return raw, {"data": data}


def _pack(raw: bytearray, name: str, fmt: str, value, index: int = 0, big: bool = False) -> None:
    order = ">" if big else "<"
    struct.pack_into(order + fmt, raw, OFF[name] + 4 * index, value)


FATAL_KINDS = (
    "dims",
    "huge",
    "mode",
    "axes",
    "cell",
    "sampling",
    "truncate",
    "nsymbt",
    "nan",
    "mapid",
    "compressed_cut",
    "compressed_corrupt",
    "garbage",
    "empty",
)
KEYWORDS = {
    "dims": ("dimension",),
    "huge": ("limit", "truncated", "bytes"),
    "mode": ("mode",),
    "axes": ("axis order",),
    "cell": ("cell", "voxel size"),
    "sampling": ("cell", "voxel size", "sampling"),
    "truncate": ("truncated", "bytes", "header"),
    "nsymbt": ("nsymbt", "extended header", "truncated"),
    "nan": ("nan", "infinite"),
    "mapid": ("map", "mrc"),
    "compressed_cut": ("truncated", "gzip", "bzip2", "corrupt", "bytes"),
    # A flipped byte may land anywhere in the decompressed header, so any header problem
    # is a fair report; a corrupt data block must fail the stream's checksum.
    "compressed_corrupt": (
        "gzip",
        "bzip2",
        "corrupt",
        "truncated",
        "bytes",
        "mrc",
        "mode",
        "dimension",
        "axis order",
        "cell",
        "voxel size",
        "nan",
        "limit",
        "nsymbt",
    ),
    "garbage": ("mrc", "map", "bytes"),
    "empty": ("bytes", "mrc"),
}


@st.composite
def broken_maps(draw, kind: str):
    """(file bytes, suffix, fatal kinds applied, extra CLI args) for one kind of damage."""
    shape = tuple(draw(st.integers(1, 5)) for _ in range(3))
    mode = draw(st.sampled_from(sorted(MODES)))
    axes = draw(st.sampled_from(PERMUTATIONS))
    seed = draw(st.integers(0, 2**16))
    extra: list[str] = []
    if kind == "garbage":
        return draw(st.binary(min_size=0, max_size=3000)), ".mrc", [kind], extra
    if kind == "empty":
        return b"", draw(st.sampled_from([".mrc", ".map", ".mrc.gz"])), [kind], extra
    raw, _ = valid_map_bytes(shape, mode, axes, seed)
    raw = bytearray(raw)
    kinds = [kind]
    if kind == "dims":
        which = draw(st.sampled_from(["nx", "ny", "nz"]))
        _pack(raw, which, "i", draw(st.sampled_from([0, -1, -7, -(2**31)])))
    elif kind == "huge":
        for name in ("nx", "ny", "nz"):
            _pack(raw, name, "i", 10_000)  # 10^12 voxels
        if draw(st.booleans()):
            extra = ["--max-voxels", str(10**13)]  # then the file size must refuse it
    elif kind == "mode":
        _pack(raw, "mode", "i", draw(st.sampled_from([3, 4, 5, 7, 13, 101, -1, 255, 1000])))
    elif kind == "axes":
        bad = draw(st.tuples(*[st.integers(-2, 5)] * 3).filter(lambda a: sorted(a) != [1, 2, 3]))
        for name, value in zip(("mapc", "mapr", "maps"), bad, strict=True):
            _pack(raw, name, "i", value)
    elif kind == "cell":
        bad = draw(st.sampled_from([0.0, -1.0, -1e-3, math.nan, math.inf, -math.inf]))
        _pack(raw, "cella", "f", bad, index=draw(st.integers(0, 2)))
    elif kind == "sampling":
        _pack(
            raw,
            draw(st.sampled_from(["mx", "my", "mz"])),
            "i",
            draw(st.sampled_from([0, -1, -100])),
        )
    elif kind == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "nsymbt":
        _pack(raw, "nsymbt", "i", draw(st.sampled_from([-1, -4096, 2**31 - 1, 10**9])))
    elif kind == "nan":
        if mode not in (2, 12):
            raw, _ = valid_map_bytes(shape, 2, axes, seed)
            raw = bytearray(raw)
            mode = 2
        itemsize = np.dtype(MODES[mode]).itemsize
        n = shape[0] * shape[1] * shape[2]
        index = draw(st.integers(0, n - 1))
        value = np.array([draw(st.sampled_from([np.nan, np.inf, -np.inf]))], MODES[mode])
        raw[1024 + index * itemsize : 1024 + (index + 1) * itemsize] = value.tobytes()
    elif kind == "mapid":
        raw[208:212] = draw(st.sampled_from([b"\0\0\0\0", b"PAM ", b"XXXX"]))
    suffix = ".mrc"
    if kind in ("compressed_cut", "compressed_corrupt") or draw(st.integers(0, 4)) == 0:
        codec = draw(st.sampled_from(["gzip", "bzip2"]))
        packed = gzip.compress(bytes(raw), mtime=0) if codec == "gzip" else bz2.compress(bytes(raw))
        suffix = ".mrc.gz" if codec == "gzip" else ".mrc.bz2"
        if kind == "compressed_cut":
            packed = packed[: draw(st.integers(4, len(packed) - 1))]
        elif kind == "compressed_corrupt":
            packed = bytearray(packed)
            start = 10 if codec == "gzip" else 4
            pos = draw(st.integers(start, len(packed) - 9))
            packed[pos] ^= draw(st.integers(1, 255))
            packed[pos + 1] ^= 0x5A
            packed = bytes(packed)
        raw = packed
    return bytes(raw), suffix, kinds, extra


def commands(path: Path, out_dir: Path, extra: list[str]) -> list[list[str]]:
    cmds = [
        ["info", str(path), *extra],
        ["info", str(path), "--json", *extra],
        ["fit", str(path), "--field", "spline", "-o", str(out_dir / "s.neural"), *extra],
    ]
    if HAS_NEURAL:
        cmds.append(
            ["-q", "fit", str(path), "--max-epochs", "1", "-o", str(out_dir / "n.neural"), *extra]
        )
    if HAS_GRAPH:
        cmds.append(["graph", str(path), "--field", "spline", "-o", str(out_dir / "g.graph.json")])
    return cmds


def _warm_up(capsys, tmp: Path) -> None:
    """Import torch and the neural module before memory is measured."""
    if HAS_NEURAL:
        import neural_em.fields.neural  # noqa: F401
    raw, _ = valid_map_bytes((4, 4, 4), 2, (1, 2, 3), 1)
    path = tmp / "warm.mrc"
    path.write_bytes(raw)
    for argv in commands(path, tmp, []):
        run_cli(capsys, argv)


# --------------------------------------------------------------------------- fuzz: broken
@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    return tmp_path_factory.mktemp("warm")


@pytest.mark.parametrize("kind", FATAL_KINDS)
def test_broken_maps_are_refused_cleanly(kind, capsys, warm):
    """Every kind of damage, each on many random maps (modes, axes, shapes, compression)."""

    @settings(
        max_examples=EXAMPLES_PER_KIND,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=broken_maps(kind))
    def check(case):
        _check_broken(case, capsys, warm)

    check()


def _check_broken(case, capsys, warm) -> None:
    content, suffix, kinds, extra = case
    if not COUNTS.get("_warm"):
        _warm_up(capsys, warm)
        COUNTS["_warm"] = 1
    keywords = tuple(k for kind in kinds for k in KEYWORDS[kind])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / f"fuzzed{suffix}"
        path.write_bytes(content)
        bound = MEM_BASE_MB + MEM_FACTOR * len(content) / 2**20
        for argv in commands(path, tmp, extra):
            COUNTS["malformed_runs"] += 1
            code, _, err = run_cli(capsys, argv, mem_bound_mb=bound)
            assert_clean_refusal(code, err, path, keywords, argv)
            COUNTS["malformed_refused_cleanly"] += 1
        assert not list(tmp.glob("*.neural")) and not list(tmp.glob("*.json")), (
            "a refused input left an output file"
        )
    COUNTS["malformed_files"] += 1
    for kind in kinds:
        COUNTS[f"kind_{kind}"] += 1


# --------------------------------------------------------------------------- fuzz: odd, valid
@st.composite
def odd_valid_maps(draw):
    shape = tuple(draw(st.integers(2, 6)) for _ in range(3))
    mode = draw(st.sampled_from(sorted(MODES)))
    axes = draw(st.sampled_from(PERMUTATIONS))
    seed = draw(st.integers(0, 2**16))
    big = draw(st.booleans())
    raw, info = valid_map_bytes(shape, mode, axes, seed, big_endian=big)
    raw = bytearray(raw)
    oddities = []
    if draw(st.booleans()):
        for i in range(3):
            _pack(raw, "origin", "f", math.nan, index=i, big=big)
        oddities.append("nan_origin")
    if not big and draw(st.booleans()):
        raw[212:216] = b"\x00\x00\x00\x00"  # unknown machine stamp: little-endian assumed
        oddities.append("machine_stamp")
    if draw(st.booleans()):
        raw += bytes(draw(st.integers(1, 64)))
        oddities.append("trailing_bytes")
    suffix = ".mrc"
    codec = draw(st.sampled_from([None, None, "gzip", "bzip2"]))
    if codec == "gzip":
        raw, suffix = gzip.compress(bytes(raw), mtime=0), ".mrc.gz"
    elif codec == "bzip2":
        raw, suffix = bz2.compress(bytes(raw)), ".map.bz2"
    return bytes(raw), suffix, info["data"], axes, oddities + ([codec] if codec else [])


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=odd_valid_maps())
def test_odd_but_valid_maps_work(case, capsys):
    content, suffix, data, axes, oddities = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / f"odd{suffix}"
        path.write_bytes(content)
        code, out, err = run_cli(capsys, ["info", str(path), "--json"])
        assert code == 0, err
        info = json.loads(out)
        assert info["axis_order"] == list(axes)
        assert np.all(np.isfinite(info["origin"])) and np.all(np.isfinite(info["voxel_size"]))
        assert info["min"] == pytest.approx(float(data.min()), rel=1e-3, abs=1e-3)
        assert info["max"] == pytest.approx(float(data.max()), rel=1e-3, abs=1e-3)
        field = tmp / "s.neural"
        code, _, err = run_cli(capsys, ["fit", str(path), "--field", "spline", "-o", str(field)])
        if float(np.maximum(data, 0).max()) <= float(np.maximum(data, 0).min()):
            assert_clean_refusal(code, err, path, ("density range",), ["fit"])
            COUNTS["valid_refused_cleanly"] += 1
            return
        assert code == 0, err
        out_map = tmp / "r.mrc"
        code, _, err = run_cli(
            capsys, ["resample", str(field), "-o", str(out_map), "--voxel-size", "0.7"]
        )
        assert code == 0, err
        assert mrcfile.validate(str(out_map), print_file=io.StringIO())
        with mrcfile.open(out_map) as mrc:
            assert np.all(np.isfinite(mrc.data))
            assert mrc.data.min() >= -0.5 and mrc.data.max() <= 1.5
    COUNTS["valid_files"] += 1
    for odd in oddities:
        COUNTS[f"valid_{odd}"] += 1


# --------------------------------------------------------------------------- constant maps
@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_and_all_zero_maps(value, tmp_path, capsys):
    """``info`` describes them; ``fit`` and ``graph`` refuse them clearly (nothing to
    normalise): never NaNs."""
    raw, _ = valid_map_bytes((5, 4, 3), 2, (1, 2, 3), 0, constant=value)
    path = tmp_path / f"constant_{value}.mrc"
    path.write_bytes(raw)
    code, out, err = run_cli(capsys, ["info", str(path), "--json"])
    assert code == 0, err
    info = json.loads(out)
    assert info["min"] == info["max"] == value and info["std"] == 0.0
    argvs = [["fit", str(path), "--field", "spline", "-o", str(tmp_path / "c.neural")]]
    if HAS_NEURAL:
        argvs.append(
            ["-q", "fit", str(path), "--max-epochs", "1", "-o", str(tmp_path / "n.neural")]
        )
    if HAS_GRAPH:
        argvs.append(["graph", str(path), "-o", str(tmp_path / "g.graph.json")])
    for argv in argvs:
        code, _, err = run_cli(capsys, argv)
        assert_clean_refusal(code, err, path, ("density range", "constant"), argv)
        COUNTS["constant_maps_refused_cleanly"] += 1
    assert not list(tmp_path.glob("*.neural"))


def test_map_with_one_positive_voxel_fits(tmp_path, capsys):
    """The smallest non-constant map: a defined, finite field."""
    data = np.zeros((3, 4, 5), np.float32)
    data[1, 2, 3] = 1.0
    path = tmp_path / "one.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.0
    code, _, err = run_cli(
        capsys, ["fit", str(path), "--field", "spline", "-o", str(tmp_path / "one.neural")]
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys, ["resample", str(tmp_path / "one.neural"), "-o", str(tmp_path / "one.mrc2.mrc")]
    )
    assert code == 0, err
    with mrcfile.open(tmp_path / "one.mrc2.mrc") as mrc:
        assert np.all(np.isfinite(mrc.data))
        assert mrc.data[1, 2, 3] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- memory
@pytest.mark.parametrize("codec", ["gzip", "bzip2"])
def test_compressed_bomb_is_bounded(codec, tmp_path, capsys):
    """A tiny compressed file whose header claims far more voxels than the stream holds is
    refused without allocating what the header claims."""
    raw, _ = valid_map_bytes((4, 4, 4), 2, (1, 2, 3), 0)
    raw = bytearray(raw)
    for name in ("nx", "ny", "nz"):
        _pack(raw, name, "i", 1000)  # 10^9 voxels: 4 GB claimed
    raw += bytes(20 * 2**20)  # 20 MB of zeros really in the stream
    packed = gzip.compress(bytes(raw), mtime=0) if codec == "gzip" else bz2.compress(bytes(raw))
    path = tmp_path / f"bomb.mrc.{'gz' if codec == 'gzip' else 'bz2'}"
    path.write_bytes(packed)
    assert len(packed) < 200_000
    for argv in (
        ["info", str(path), "--max-voxels", str(10**10)],
        [
            "fit",
            str(path),
            "--field",
            "spline",
            "-o",
            str(tmp_path / "b.neural"),
            "--max-voxels",
            str(10**10),
        ],
    ):
        code, _, err = run_cli(capsys, argv, mem_bound_mb=MEM_BASE_MB + 2 * 21)
        assert_clean_refusal(code, err, path, ("truncated",), argv)
        COUNTS["compressed_bombs_refused"] += 1


def test_huge_extended_header_claim_allocates_nothing(tmp_path, capsys):
    """NSYMBT = 2^31 - 1 in a 1.3 kB file: refused before the 2 GB extended header is read
    (mrcfile's reader would allocate it)."""
    raw, _ = valid_map_bytes((4, 4, 4), 2, (1, 2, 3), 0)
    raw = bytearray(raw)
    _pack(raw, "nsymbt", "i", 2**31 - 1)
    path = tmp_path / "ext.mrc"
    path.write_bytes(raw)
    code, _, err = run_cli(capsys, ["info", str(path)], mem_bound_mb=MEM_BASE_MB)
    assert_clean_refusal(code, err, path, ("truncated",), ["info"])


# --------------------------------------------------------------------------- subprocesses
SUBPROCESS_CASES = ["truncate", "huge", "mode", "axes", "cell", "nan", "garbage", "gzip_cut"]


@pytest.mark.parametrize("kind", SUBPROCESS_CASES)
def test_real_subprocess_refusals(kind, tmp_path):
    """The installed entry point: exit 2, one stderr line, no traceback."""
    raw, _ = valid_map_bytes((5, 4, 3), 2, (3, 1, 2), 1)
    raw = bytearray(raw)
    suffix = ".mrc"
    if kind == "truncate":
        raw = raw[:1100]
    elif kind == "huge":
        for name in ("nx", "ny", "nz"):
            _pack(raw, name, "i", 10_000)
    elif kind == "mode":
        _pack(raw, "mode", "i", 3)
    elif kind == "axes":
        _pack(raw, "maps", "i", 1)
    elif kind == "cell":
        _pack(raw, "cella", "f", -5.0)
    elif kind == "nan":
        raw[1024:1028] = np.array([np.nan], np.float32).tobytes()
    elif kind == "garbage":
        raw = bytearray(os.urandom(5000))
    elif kind == "gzip_cut":
        raw = bytearray(gzip.compress(bytes(raw), mtime=0)[:200])
        suffix = ".mrc.gz"
    path = tmp_path / f"{kind}{suffix}"
    path.write_bytes(raw)
    keywords = {"gzip_cut": ("gzip", "truncated", "corrupt")}.get(
        kind, KEYWORDS.get(kind, ("mrc",))
    )
    for argv in (
        ["info", str(path)],
        ["fit", str(path), "--field", "spline", "-o", str(tmp_path / "x.neural")],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "neural_em.cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_clean_refusal(proc.returncode, proc.stderr, path, keywords, argv)
        COUNTS["subprocess_refused_cleanly"] += 1
