"""Atomic models (PDB and mmCIF via gemmi): C-alpha and heavy-atom coordinates.

Only the first model of a file is used. C-alphas are counted once per amino-acid residue
(the first alternate location; a calcium ion named ``CA`` is not a C-alpha); heavy atoms are
every non-hydrogen atom of the first alternate location, waters excluded unless asked.
Coordinates are ``(n, 3)`` float64 arrays in x, y, z order, in Å.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
from pathlib import Path

import gemmi
import numpy as np

from neural_em.errors import InputError

logger = logging.getLogger(__name__)

#: Largest model file read (bytes); a guard against reading something that is not a model.
MAX_MODEL_BYTES = 2 * 1024**3


@dataclasses.dataclass
class AtomicModel:
    """Coordinates taken from an atomic model.

    ``ca``: ``(n, 3)`` Å, one C-alpha per amino-acid residue; ``ca_labels``: ``chain/seqid``
    of each; ``heavy``: ``(m, 3)`` Å non-hydrogen atoms; ``source``: the file.
    """

    ca: np.ndarray
    ca_labels: list[str]
    heavy: np.ndarray
    source: str = ""

    @property
    def n_ca(self) -> int:
        return int(len(self.ca))


def read_structure(path: str | os.PathLike, *, by_content: bool = False) -> gemmi.Structure:
    """Read a PDB or mmCIF file (optionally gzipped) with gemmi: the package's one structure
    reader.

    ``by_content``: read the file as mmCIF, plain or gzipped as its first bytes say, whatever
    its name (downloads are checked under temporary names). Raises :class:`InputError` naming
    the file for a missing, empty or unreadable file or one without any model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such model file", path)
    size = path.stat().st_size
    if size == 0:
        raise InputError("model file is empty", path)
    if size > MAX_MODEL_BYTES:
        raise InputError(f"model file is {size} bytes, more than {MAX_MODEL_BYTES}", path)
    try:
        if by_content:
            with open(path, "rb") as handle:
                gzipped = handle.read(2) == b"\x1f\x8b"
            with (gzip.open if gzipped else open)(path, "rb") as handle:
                text = handle.read().decode("utf-8", errors="replace")
            st = gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        else:
            st = gemmi.read_structure(str(path))
    except Exception as exc:  # gemmi raises RuntimeError/ValueError/... for broken files
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"not a readable PDB/mmCIF model ({text[:200]})", path) from exc
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise InputError("model file holds no atoms", path)
    coords_ok = all(
        np.isfinite([a.pos.x, a.pos.y, a.pos.z]).all() for ch in st[0] for res in ch for a in res
    )
    if not coords_ok:
        raise InputError("model holds non-finite coordinates", path)
    return st


def _is_amino_acid(residue: gemmi.Residue) -> bool:
    info = gemmi.find_tabulated_residue(residue.name)
    if info is not None and info.kind != gemmi.ResidueKind.UNKNOWN:
        return bool(info.is_amino_acid())
    # Unknown (non-tabulated) residue: an amino acid if it has the backbone N, CA, C atoms.
    names = {a.name for a in residue}
    return {"N", "CA", "C"} <= names


def _first_altloc(residue: gemmi.Residue) -> str:
    for atom in residue:
        if atom.altloc != "\0":
            return atom.altloc
    return "\0"


def _keep_atom(atom: gemmi.Atom, altloc: str) -> bool:
    return atom.altloc == "\0" or atom.altloc == altloc


def ca_from_structure(st: gemmi.Structure) -> tuple[np.ndarray, list[str]]:
    """C-alpha coordinates ``(n, 3)`` Å and ``chain/seqid`` labels of the first model.

    One C-alpha per amino-acid residue (first alternate location; for residues present in
    several versions under one sequence number only the first counts); atoms named ``CA``
    that are not carbon, or in residues that are not amino acids (calcium ions), are ignored.
    """
    coords: list[list[float]] = []
    labels: list[str] = []
    seen: set[tuple[str, str]] = set()
    for chain in st[0]:
        for residue in chain:
            if not _is_amino_acid(residue):
                continue
            key = (chain.name, str(residue.seqid))
            if key in seen:  # microheterogeneity: a second residue under the same number
                continue
            altloc = _first_altloc(residue)
            for atom in residue:
                if atom.name == "CA" and atom.element.name == "C" and _keep_atom(atom, altloc):
                    coords.append([atom.pos.x, atom.pos.y, atom.pos.z])
                    labels.append(f"{chain.name}/{residue.seqid}")
                    seen.add(key)
                    break
    return np.array(coords, dtype=np.float64).reshape(-1, 3), labels


def heavy_atoms_from_structure(st: gemmi.Structure, *, include_waters: bool = False) -> np.ndarray:
    """Non-hydrogen atoms ``(m, 3)`` Å of the first model (first alternate location)."""
    coords: list[list[float]] = []
    for chain in st[0]:
        for residue in chain:
            if not include_waters and residue.is_water():
                continue
            altloc = _first_altloc(residue)
            for atom in residue:
                if atom.is_hydrogen() or not _keep_atom(atom, altloc):
                    continue
                coords.append([atom.pos.x, atom.pos.y, atom.pos.z])
    return np.array(coords, dtype=np.float64).reshape(-1, 3)


def read_model(
    path: str | os.PathLike, *, require_ca: bool = True, include_waters: bool = False
) -> AtomicModel:
    """Read C-alpha and heavy-atom coordinates of a PDB/mmCIF model.

    Raises :class:`InputError` for unreadable files and, with ``require_ca``, for models
    without a C-alpha of an amino-acid residue.
    """
    st = read_structure(path)
    ca, labels = ca_from_structure(st)
    if require_ca and len(ca) == 0:
        raise InputError("model has no C-alpha atoms of amino-acid residues", path)
    heavy = heavy_atoms_from_structure(st, include_waters=include_waters)
    logger.info("%s: %d C-alpha, %d heavy atoms", path, len(ca), len(heavy))
    return AtomicModel(ca=ca, ca_labels=labels, heavy=heavy, source=os.fspath(path))


def read_ca(path: str | os.PathLike) -> np.ndarray:
    """C-alpha coordinates ``(n, 3)`` Å of a model; InputError if it has none."""
    return read_model(path).ca


#: Secondary-structure classes of C-alphas and graph nodes, in the order used by every table.
SSE_CLASSES = ("helix", "strand", "coil")

_PSEA_CLASS = {"a": "helix", "b": "strand", "c": "coil"}


def ca_secondary_structure(model: AtomicModel) -> np.ndarray:
    """Secondary structure ``(n,)`` (``"helix"``, ``"strand"`` or ``"coil"``) of each C-alpha
    of ``model``, computed from the C-alpha coordinates alone by P-SEA (biotite's
    ``annotate_sse``), never read from HELIX/SHEET records (many files lack them).

    Chains and sequence numbers come from ``ca_labels`` (``chain/seqid``); a break in the
    numbering breaks the chain. Residues P-SEA cannot annotate are ``"coil"``.
    """
    import biotite.structure as struc  # imported where evaluated: a second of start-up

    n = model.n_ca
    if n == 0:
        return np.zeros(0, dtype="<U6")
    chains, res_ids, ins_codes = [], [], []
    for label in model.ca_labels:
        chain, _, seqid = label.partition("/")
        digits = seqid.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ")
        chains.append(chain)
        res_ids.append(int(digits) if digits.lstrip("-").isdigit() else 0)
        ins_codes.append(seqid[len(digits) :].strip())
    atoms = struc.AtomArray(n)
    atoms.coord = np.asarray(model.ca, dtype=np.float32)
    atoms.chain_id = np.array(chains)
    atoms.res_id = np.array(res_ids)
    atoms.ins_code = np.array(ins_codes)
    atoms.res_name = np.full(n, "ALA")
    atoms.atom_name = np.full(n, "CA")
    atoms.element = np.full(n, "C")
    atoms.hetero = np.zeros(n, dtype=bool)
    codes = struc.annotate_sse(atoms)
    return np.array([_PSEA_CLASS.get(str(c), "coil") for c in codes], dtype="<U6")
