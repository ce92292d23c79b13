"""Atomic models: C-alpha selection (amino acids only, first altloc, once per residue),
heavy atoms, and clear refusals of unusable files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from helpers import shared_file

from neural_em.errors import InputError
from neural_em.models import read_model, read_structure


def pdb_line(serial, name, resname, chain, resseq, xyz, element, altloc=" ", record="ATOM"):
    x, y, z = xyz
    return (
        f"{record:<6s}{serial:5d} {name:<4s}{altloc}{resname:>3s} {chain}{resseq:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {element:>2s}\n"
    )


def write_pdb(path, lines):
    path.write_text("".join(lines) + "END\n")
    return path


@pytest.fixture
def tricky_pdb(tmp_path):
    """Two alanines (one with altlocs A/B), a calcium ion named CA, a water and hydrogens."""
    lines = [
        pdb_line(1, "N", "ALA", "A", 1, (0, 0, 0), "N"),
        pdb_line(2, "CA", "ALA", "A", 1, (1.0, 0, 0), "C"),
        pdb_line(3, "C", "ALA", "A", 1, (2.0, 0, 0), "C"),
        pdb_line(4, "H", "ALA", "A", 1, (0, 1.0, 0), "H"),
        pdb_line(5, "N", "ALA", "A", 2, (3.0, 0, 0), "N"),
        pdb_line(6, "CA", "ALA", "A", 2, (4.0, 0, 0), "C", altloc="A"),
        pdb_line(7, "CA", "ALA", "A", 2, (4.2, 0.3, 0), "C", altloc="B"),
        pdb_line(8, "C", "ALA", "A", 2, (5.0, 0, 0), "C"),
        pdb_line(9, "CA", "CA", "B", 101, (10.0, 10.0, 10.0), "CA", record="HETATM"),
        pdb_line(10, "O", "HOH", "B", 201, (20.0, 0, 0), "O", record="HETATM"),
    ]
    return write_pdb(tmp_path / "tricky.pdb", lines)


def test_ca_selection(tricky_pdb):
    model = read_model(tricky_pdb)
    assert model.n_ca == 2  # calcium ignored, altloc counted once
    np.testing.assert_allclose(model.ca, [[1.0, 0, 0], [4.0, 0, 0]])  # first altloc kept
    assert model.ca_labels == ["A/1", "A/2"]
    # heavy atoms: N, CA, C of residue 1; N, CA(A), C of residue 2; the calcium; no H/water
    assert len(model.heavy) == 7
    assert len(read_model(tricky_pdb, include_waters=True).heavy) == 8


def test_mmcif_and_gzip_read_the_same(tricky_pdb, tmp_path):
    st = read_structure(tricky_pdb)
    cif = tmp_path / "tricky.cif"
    st.setup_entities()
    st.make_mmcif_document().write_file(str(cif))
    gz = tmp_path / "tricky.pdb.gz"
    gz.write_bytes(gzip.compress(tricky_pdb.read_bytes()))
    for path in (cif, gz):
        np.testing.assert_allclose(read_model(path).ca, read_model(tricky_pdb).ca, atol=1e-3)


def test_unknown_residue_with_backbone_counts(tmp_path):
    lines = [
        pdb_line(i + 1, n, "XYZ", "A", 1, (i, 0, 0), n[0], record="HETATM")
        for i, n in enumerate(("N", "CA", "C"))
    ]
    lines.append(pdb_line(4, "CA", "QQQ", "A", 2, (9, 0, 0), "C", record="HETATM"))
    model = read_model(write_pdb(tmp_path / "x.pdb", lines))
    assert model.n_ca == 1 and model.ca_labels == ["A/1"]


def test_no_ca_refused(tmp_path):
    water = write_pdb(
        tmp_path / "water.pdb", [pdb_line(1, "O", "HOH", "A", 1, (0, 0, 0), "O", record="HETATM")]
    )
    with pytest.raises(InputError, match="no C-alpha"):
        read_model(water)
    assert read_model(water, require_ca=False).n_ca == 0


@pytest.mark.parametrize(
    "content", [b"", b"\x00\x01\x02garbage" * 50, b"data_x\nloop_\n_a.b\n", b"HELLO WORLD\n"]
)
def test_unreadable_models_refused(tmp_path, content):
    path = tmp_path / "bad.cif"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_model(path)
    assert "bad.cif" in str(info.value)
    with pytest.raises(InputError, match="no such"):
        read_model(tmp_path / "absent.pdb")


def test_real_models_ca_counts():
    counts = {
        "emd_3488/5ni1.cif": 574,
        "emd_5778/3j5p.pdb": 592,
        "emd_21457/6vyb_Ndom.pdb": 198,
        "simulated/6g61/6g61.pdb": 111,
    }
    for rel, n in counts.items():
        assert read_model(shared_file(rel)).n_ca == n
    # 3qc7 has eight residues with alternate C-alphas: 172 CA lines, 164 residues
    assert read_model(shared_file("simulated/3qc7/3qc7.pdb")).n_ca == 164
