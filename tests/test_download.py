"""Downloads for real against an HTTP server on 127.0.0.1 serving fixture files under the
archives' paths: success, 404, 5xx then success, truncated gzip, a hanging server, a body cut
off mid-way, and the local mirror. After every failure: a clear error, nothing under ``dest``
and no temporary file left beside it."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import gemmi
import numpy as np
import pytest

from neural_em.errors import InputError
from neural_em.pipeline import archive as ar
from neural_em.pipeline import download as dl
from neural_em.voxelmap import read_map, write_map

EMDB = "/pub/databases/emdb"
API = "/emdb/api"
PDB = "/download"
FASTA = "/fasta"

FASTA_TEXT = (
    ">5NI1_1|Chains A, C|Hemoglobin subunit alpha|Homo sapiens\nVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF\n"
    ">5NI1_2|Chains B, D|Hemoglobin subunit beta|Homo sapiens\nVHLTPEEKSAVTALWGKVNVDEVGGEALGRLLVVYPWTQRFFESFGDLST\n"
)

METADATA = {
    "emdb_id": "EMD-3488",
    "admin": {"title": "Human haemoglobin"},
    "structure_determination_list": {
        "structure_determination": [
            {
                "image_processing": [
                    {
                        "final_reconstruction": {
                            "resolution": {"valueOf_": "3.2", "units": "Å", "res_type": "BY AUTHOR"}
                        }
                    }
                ]
            }
        ]
    },
    "map": {
        "dimensions": {"col": 12, "row": 10, "sec": 8},
        "axis_order": {"fast": "X", "medium": "Y", "slow": "Z"},
        "pixel_spacing": {
            "x": {"valueOf_": 1.05, "units": "Å"},
            "y": {"valueOf_": 1.05, "units": "Å"},
            "z": {"valueOf_": 1.05, "units": "Å"},
        },
        "contour_list": {"contour": [{"primary": True, "level": 0.1, "source": "AUTHOR"}]},
    },
}


def _mrc_gz(tmp: Path) -> bytes:
    data = np.zeros((8, 10, 12), dtype=np.float32)
    data[3, 2, 1] = 1.0
    path = write_map(tmp / "emd_3488.map.gz", data, voxel_size=1.05, origin=(1.0, 2.0, 3.0))
    return path.read_bytes()


def _mmcif_gz(tmp: Path) -> bytes:
    st = gemmi.Structure()
    st.name = "5NI1"
    st.cell = gemmi.UnitCell(20, 20, 20, 90, 90, 90)
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    residue = gemmi.Residue()
    residue.name, residue.seqid = "GLY", gemmi.SeqId("1")
    residue.entity_type = gemmi.EntityType.Polymer
    for name, element, pos in (
        ("N", "N", (1, 2, 3)),
        ("CA", "C", (2, 2, 3)),
        ("C", "C", (3, 2, 3)),
        ("O", "O", (3, 3, 3)),
    ):
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos = name, gemmi.Element(element), gemmi.Position(*pos)
        residue.add_atom(atom)
    chain.add_residue(residue)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    text = st.make_mmcif_document().as_string()
    return gzip.compress(text.encode())


class Archive:
    """A threaded HTTP server on 127.0.0.1 with per-path behaviours and hit counts."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail_first: dict[str, int] = {}  # path -> number of 500 answers before success
        self.hang: set[str] = set()
        self.cut: set[str] = set()
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()
        archive = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                archive.hits[path] += 1
                if path in archive.hang:
                    archive.release.wait(20)  # bounded: the test sets it at the end
                    return
                if archive.fail_first.get(path, 0) >= archive.hits[path]:
                    self.send_error(500, "fixture failure")
                    return
                body = archive.files.get(path)
                if body is None:
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in archive.cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Archive:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("fixtures")
    return {
        "map": _mrc_gz(tmp),
        "cif": _mmcif_gz(tmp),
        "fasta": FASTA_TEXT.encode(),
        "json": json.dumps(METADATA).encode(),
    }


@pytest.fixture()
def archive(fixtures):
    with Archive() as server:
        server.files[f"{EMDB}/structures/EMD-3488/map/emd_3488.map.gz"] = fixtures["map"]
        server.files[f"{API}/entry/EMD-3488"] = fixtures["json"]
        server.files[f"{PDB}/5ni1.cif.gz"] = fixtures["cif"]
        server.files[f"{FASTA}/entry/5NI1"] = fixtures["fasta"]
        yield server


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_urls_follow_the_archive_layout():
    assert (
        ar.emdb_map_url("EMD-3488", base="https://x/emdb/")
        == "https://x/emdb/structures/EMD-3488/map/emd_3488.map.gz"
    )
    assert ar.emdb_map_url(11007, base="b") == "b/structures/EMD-11007/map/emd_11007.map.gz"
    assert ar.emdb_map_url("emd_3488", base="b") == ar.emdb_map_url("3488", base="b")
    assert ar.emdb_metadata_url("EMD-3488", base="https://x/api") == "https://x/api/entry/EMD-3488"
    assert ar.pdb_mmcif_url("5NI1", base="p") == "p/5ni1.cif.gz"
    assert ar.pdb_mmcif_url("5ni1", base="p", gzipped=False) == "p/5ni1.cif"
    assert ar.pdb_fasta_url("5ni1", base="f") == "f/entry/5NI1"
    for bad in ("EMD-", "abc", "EMD-12"):
        with pytest.raises(InputError, match="not an EMDB id"):
            ar.emdb_map_url(bad, base="b")
    with pytest.raises(InputError, match="not a PDB id"):
        ar.pdb_mmcif_url("5ni", base="p")


def test_every_kind_downloads_and_passes_its_check(archive, tmp_path):
    base = archive.base
    out = dl.fetch(
        ar.emdb_map_url("EMD-3488", base=base + EMDB),
        tmp_path / "m.map.gz",
        validate=dl.check_mrc_header,
        retries=0,
    )
    vmap = read_map(out)
    assert vmap.shape_xyz == (12, 10, 8)
    np.testing.assert_allclose(vmap.index_to_world(np.array([[1, 2, 3]]))[0], [2.05, 4.1, 6.15])
    assert dl.check_mrc_header(out)["shape_xyz"] == [12, 10, 8]
    cif = dl.fetch(
        ar.pdb_mmcif_url("5ni1", base=base + PDB),
        tmp_path / "m.cif.gz",
        validate=dl.check_mmcif,
        retries=0,
    )
    assert dl.check_mmcif(cif) == 4
    fasta = dl.fetch(
        ar.pdb_fasta_url("5ni1", base=base + FASTA),
        tmp_path / "s.fasta",
        validate=dl.check_fasta,
        retries=0,
    )
    assert dl.check_fasta(fasta) == 2
    meta = dl.emdb_metadata("EMD-3488", tmp_path / "meta.json", base=base + API, retries=0)
    assert meta["resolution"] == pytest.approx(3.2)
    assert meta["contour"] == pytest.approx(0.1)
    assert meta["shape_xyz"] == [12, 10, 8] and meta["voxels"] == 960
    assert meta["voxel_size"] == [1.05, 1.05, 1.05]
    assert meta["emdb_id"] == "EMD-3488" and meta["title"] == "Human haemoglobin"
    assert _no_leftovers(tmp_path) == ["m.cif.gz", "m.map.gz", "meta.json", "s.fasta"]


def test_404_fails_at_once_naming_url_and_status(archive, tmp_path):
    url = ar.emdb_map_url("EMD-9999", base=archive.base + EMDB)
    t0 = time.monotonic()
    with pytest.raises(dl.NotFoundError) as info:
        dl.fetch(url, tmp_path / "x.map.gz", retries=3, backoff_s=5)
    assert time.monotonic() - t0 < 3  # no retry, no backoff
    assert url in str(info.value) and "404" in str(info.value)
    assert info.value.status == 404
    assert archive.hits[f"{EMDB}/structures/EMD-9999/map/emd_9999.map.gz"] == 1
    assert _no_leftovers(tmp_path) == []


def test_500_is_retried_with_backoff_then_succeeds(archive, tmp_path):
    path = f"{PDB}/5ni1.cif.gz"
    archive.fail_first[path] = 2
    t0 = time.monotonic()
    out = dl.fetch(
        archive.base + path,
        tmp_path / "m.cif.gz",
        retries=3,
        backoff_s=0.2,
        validate=dl.check_mmcif,
    )
    elapsed = time.monotonic() - t0
    assert archive.hits[path] == 3
    assert elapsed >= 0.2 + 0.4 - 0.05  # exponential backoff: 0.2 s then 0.4 s
    assert dl.check_mmcif(out) == 4


def test_500_until_retries_run_out(archive, tmp_path):
    path = f"{PDB}/5ni1.cif.gz"
    archive.fail_first[path] = 10
    with pytest.raises(dl.DownloadError, match=r"failed after 3 tries; last: HTTP 500") as info:
        dl.fetch(archive.base + path, tmp_path / "m.cif.gz", retries=2, backoff_s=0.01)
    assert info.value.status == 500 and archive.base + path in str(info.value)
    assert archive.hits[path] == 3
    assert _no_leftovers(tmp_path) == []


def test_truncated_gzip_is_refused_and_leaves_nothing(archive, fixtures, tmp_path):
    path = f"{EMDB}/structures/EMD-3488/map/emd_3488.map.gz"
    archive.files[path] = fixtures["map"][: len(fixtures["map"]) * 2 // 3]
    dest = tmp_path / "emd_3488.map.gz"
    with pytest.raises(dl.DownloadError, match="truncated") as info:
        dl.fetch(archive.base + path, dest, validate=dl.check_mrc_header, retries=1, backoff_s=0.01)
    assert archive.base + path in str(info.value)
    assert archive.hits[path] == 2  # a failed check is retried like a broken connection
    assert not dest.exists() and _no_leftovers(tmp_path) == []


def test_hanging_server_times_out_within_bounds(archive, tmp_path):
    path = f"{FASTA}/entry/5NI1"
    archive.hang.add(path)
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadError, match="(?i)timed? ?out") as info:
        dl.fetch(
            archive.base + path, tmp_path / "s.fasta", timeout_s=0.5, retries=1, backoff_s=0.01
        )
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 5, elapsed  # two tries of 0.5 s each
    assert "2 tries" in str(info.value)
    assert _no_leftovers(tmp_path) == []


def test_connection_cut_mid_body_is_retried_and_never_used(archive, tmp_path):
    path = f"{EMDB}/structures/EMD-3488/map/emd_3488.map.gz"
    archive.cut.add(path)
    dest = tmp_path / "emd_3488.map.gz"
    with pytest.raises(dl.DownloadError, match="(?i)connection broken|announced") as info:
        # no validate: the length check alone refuses the half body
        dl.fetch(archive.base + path, dest, retries=1, backoff_s=0.01)
    assert archive.hits[path] == 2 and "2 tries" in str(info.value)
    assert not dest.exists() and _no_leftovers(tmp_path) == []
    archive.cut.discard(path)  # the server recovers: the next run succeeds
    dl.fetch(archive.base + path, dest, validate=dl.check_mrc_header, retries=0)
    assert read_map(dest).shape_xyz == (12, 10, 8)


def test_mirror_is_used_before_the_network(fixtures, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "structures/EMD-3488/map").mkdir(parents=True)
    (mirror / "structures/EMD-3488/map/emd_3488.map.gz").write_bytes(fixtures["map"])
    (mirror / "entry").mkdir()
    (mirror / "entry/5NI1").write_bytes(fixtures["fasta"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # an unroutable base: any network use would fail (offline=True forbids it anyway)
    base = "http://127.0.0.1:9/pub/databases/emdb"
    out = dl.fetch(
        ar.emdb_map_url("EMD-3488", base=base),
        out_dir / "m.map.gz",
        mirror_root=mirror,
        offline=True,
        validate=dl.check_mrc_header,
    )
    assert out.read_bytes() == fixtures["map"]
    dl.fetch(
        ar.pdb_fasta_url("5ni1", base="http://127.0.0.1:9/fasta"),
        out_dir / "s.fasta",
        mirror_root=mirror,
        offline=True,
        validate=dl.check_fasta,
    )
    # a `wget -m` copy (host name as first folder); the destination needs no .cif.gz suffix
    (mirror / "127.0.0.1/pdb/files").mkdir(parents=True)
    (mirror / "127.0.0.1/pdb/files/5ni1.cif.gz").write_bytes(fixtures["cif"])
    model = dl.fetch(
        ar.pdb_mmcif_url("5ni1", base="http://127.0.0.1:9/pdb/files"),
        out_dir / "model",
        mirror_root=mirror,
        offline=True,
        validate=dl.check_mmcif,
    )
    assert dl.check_mmcif(model) == 4
    # missing from the mirror, offline: a clear error naming the URL and the mirror
    with pytest.raises(dl.DownloadError, match="not in the local mirror.*offline"):
        dl.fetch(
            ar.pdb_mmcif_url("5ni1", base="http://127.0.0.1:9/download"),
            out_dir / "m.cif.gz",
            mirror_root=mirror,
            offline=True,
        )
    # a broken mirror file is refused, not copied
    (mirror / "entry/EMD-3488").write_text("{not json")
    with pytest.raises(
        dl.DownloadError, match="mirror copy .*EMD-3488 failed its check: not valid"
    ):
        dl.fetch(
            ar.emdb_metadata_url("EMD-3488", base="http://127.0.0.1:9/api"),
            out_dir / "meta.json",
            mirror_root=mirror,
            offline=True,
            validate=ar.check_json,
        )
    assert _no_leftovers(out_dir) == ["m.map.gz", "model", "s.fasta"]


def test_mirror_falls_back_to_network_when_file_absent(archive, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    out = dl.fetch(
        archive.base + f"{FASTA}/entry/5NI1",
        tmp_path / "s.fasta",
        mirror_root=mirror,
        validate=dl.check_fasta,
        retries=0,
    )
    assert dl.check_fasta(out) == 2 and archive.hits[f"{FASTA}/entry/5NI1"] == 1


def test_checks_refuse_broken_files(fixtures, tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"<html>500 Internal Server Error</html>")
    for check in (
        dl.check_gzip_complete,
        dl.check_mrc_header,
        dl.check_mmcif,
        dl.check_fasta,
        ar.check_json,
    ):
        with pytest.raises(InputError, match=str(bad)):
            check(bad)
    trailing = tmp_path / "trailing.gz"
    trailing.write_bytes(gzip.compress(b"x" * 100) + b"garbage!")
    with pytest.raises(InputError, match="corrupt"):
        dl.check_gzip_complete(trailing)
    crc = bytearray(gzip.compress(b"y" * 1000))
    crc[-8] ^= 0xFF  # CRC32 of the member
    (tmp_path / "crc.gz").write_bytes(bytes(crc))
    with pytest.raises(InputError, match="corrupt"):
        dl.check_gzip_complete(tmp_path / "crc.gz")
    # a complete gzip of a truncated MRC: the stream ends properly but holds too few bytes
    raw = gzip.decompress(fixtures["map"])
    (tmp_path / "short.map.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(InputError, match="truncated: header needs"):
        dl.check_mrc_header(tmp_path / "short.map.gz")
    (tmp_path / "plain.map").write_bytes(raw)
    assert dl.check_mrc_header(tmp_path / "plain.map")["voxels"] == 960
    with pytest.raises(InputError, match="more than the limit"):
        dl.check_mrc_header(tmp_path / "plain.map", max_voxels=100)
    empty_cif = tmp_path / "empty.cif"
    empty_cif.write_text("data_x\n_entry.id X\n")
    with pytest.raises(InputError, match="no atoms|not a readable"):
        dl.check_mmcif(empty_cif)
    no_seq = tmp_path / "noseq.fasta"
    no_seq.write_text(">a\n>b\nACDE\n")
    with pytest.raises(InputError, match="has no sequence"):
        dl.check_fasta(no_seq)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected an object"):
        ar.check_json(tmp_path / "list.json")


def test_metadata_parser_tolerates_missing_and_odd_fields():
    empty = ar.parse_emdb_metadata({})
    assert empty == {
        "emdb_id": None,
        "resolution": None,
        "contour": None,
        "shape_xyz": None,
        "voxels": None,
        "voxel_size": None,
        "title": None,
    }
    odd = {
        "map": {
            "dimensions": {"col": "100", "row": 200, "sec": {"valueOf_": 50}},
            "axis_order": {"fast": "Z", "medium": "Y", "slow": "X"},
            "contour_list": {
                "contour": [
                    {"primary": False, "level": 9.0},
                    {"primary": "true", "level": {"valueOf_": "0.5"}},
                ]
            },
            "pixel_spacing": {"x": 1.0, "y": {"valueOf_": "nan"}},
        },
        "structure_determination_list": {
            "structure_determination": [
                {"image_processing": [{"final_reconstruction": {}}]},
                {"image_processing": [{"final_reconstruction": {"resolution": 2.5}}]},
            ]
        },
    }
    parsed = ar.parse_emdb_metadata(odd)
    assert parsed["contour"] == 0.5  # the primary contour wins
    assert parsed["resolution"] == 2.5
    assert parsed["shape_xyz"] == [50, 200, 100]  # sections run along x here
    assert parsed["voxels"] == 1_000_000
    assert parsed["voxel_size"] is None  # NaN and a missing z are no voxel size
    old = {"map": {"contour_level": {"value": 0.02}}, "resolution": "3.9"}
    assert ar.parse_emdb_metadata(old)["contour"] == 0.02
    assert ar.parse_emdb_metadata(old)["resolution"] == 3.9


def test_existing_destination_kept_unless_overwrite(archive, tmp_path):
    dest = tmp_path / "s.fasta"
    dest.write_text("keep")
    url = archive.base + f"{FASTA}/entry/5NI1"
    with pytest.raises(FileExistsError):
        dl.fetch(url, dest, overwrite=False)
    assert dest.read_text() == "keep"
    dl.fetch(url, dest, validate=dl.check_fasta, retries=0, overwrite=True)
    assert dest.read_text() == FASTA_TEXT


def test_validate_failure_keeps_the_previous_file(archive, tmp_path):
    """An existing good file is never replaced by a bad download."""
    dest = tmp_path / "m.map.gz"
    dest.write_bytes(b"previous")
    path = f"{EMDB}/structures/EMD-3488/map/emd_3488.map.gz"
    archive.files[path] = b"\x1f\x8b" + io.BytesIO(b"not really gzip").read()
    with pytest.raises(dl.DownloadError):
        dl.fetch(archive.base + path, dest, validate=dl.check_mrc_header, retries=0, overwrite=True)
    assert dest.read_bytes() == b"previous"
    assert _no_leftovers(tmp_path) == ["m.map.gz"]


@pytest.mark.parametrize("gzipped", [True, False])
def test_hostile_map_claiming_a_huge_extended_header_is_refused_without_allocating(
    fixtures, archive, tmp_path, gzipped
):
    """A download whose header claims a 2 GB extended header (NSYMBT, word 24). mrcfile's
    header read reserves what NSYMBT claims before any check; the package's one header reader
    reads 1024 bytes and compares the claim with what the file holds."""
    import tracemalloc

    raw = bytearray(gzip.decompress(fixtures["map"]))
    raw[92:96] = np.array([2**31 - 1], dtype="<i4").tobytes()
    body = gzip.compress(bytes(raw)) if gzipped else bytes(raw)
    path = f"{EMDB}/structures/EMD-3488/map/emd_3488.map.gz"
    archive.files[path] = body
    dest = tmp_path / "emd_3488.map.gz"
    tracemalloc.start()
    try:
        with pytest.raises(
            dl.DownloadError,
            match="failed its check: .*truncated: header "
            f"needs {1024 + 2**31 - 1 + len(raw) - 1024} bytes",
        ):
            dl.fetch(archive.base + path, dest, validate=dl.check_mrc_header, retries=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak} bytes traced"
    assert not dest.exists() and _no_leftovers(tmp_path) == []
