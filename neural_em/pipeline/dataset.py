"""The study's dataset selection from an EMDB search export.

Rules, in this order (:func:`select_entries`):

1. Released entries only (``Status`` = ``REL`` where the export has that column).
2. Exactly one fitted PDB model (the ``Associated PDB`` field holds one id; none or several:
   dropped).
3. A positive, finite resolution.
4. One entry per citation title, keeping the best (lowest) resolution. Ties go to the lowest
   EMDB accession number (the earliest deposition); on the study's export this reproduces the
   study's choice in all 9 tied groups among its 115 maps. Titles are compared after HTML
   entities are decoded, white space collapsed, case folded and a final period dropped
   (17 of the export's 1698 distinct titles are such variants of another; the study's 115
   maps pass the rule with or without this folding). Entries without a citation title (empty,
   or a placeholder such as "To be published") are not one publication: each stays alone.
5. Resolution bins of ``bin_width_A`` (0.1 Å: [3.2, 3.3) is bin 3.2): at most ``per_bin``
   entries per bin, chosen at random with a fixed seed. Each bin's candidates are put in a
   seeded random order (independent of the CSV's row order) and taken from the front.
6. At most ``max_voxels`` (512³) voxels per map. The search export has no map dimensions, so
   this rule applies only where they are known: pass ``voxel_counts`` (EMDB id -> voxel count,
   e.g. from the EMDB API metadata, see :func:`neural_em.pipeline.archive.parse_emdb_metadata`).
   A map over the limit is skipped and the next candidate of its bin's random order takes its
   place; a map whose count is unknown is kept (and shows ``voxels`` = NA). So the selection
   without counts is a preview of the one with counts: both walk the same random order.

The study's own list (115 maps, ``paper_graph_evaluation.json``) cannot be reproduced entry by
entry (its random draw is unknown), but every one of its maps passes rules 1-4 above.
"""

from __future__ import annotations

import html
import io
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neural_em.atomic import atomic_write_text, check_output_path
from neural_em.errors import InputError

logger = logging.getLogger(__name__)

#: Output columns of :func:`select_entries`, in order.
COLUMNS = [
    "key",
    "emdb_id",
    "pdb_id",
    "resolution",
    "resolution_bin",
    "title",
    "citation",
    "voxels",
]

#: Citation titles that name no publication.
PLACEHOLDER_CITATIONS = re.compile(
    r"^\s*(to be published.*|unpublished|n/?a|none|-)?\s*$", re.IGNORECASE
)

_ALIASES = {
    "emdb_id": ("emd-", "emdb id", "emdb_id", "emd id", "entry id", "emdb"),
    "resolution": ("resolution (å)", "resolution (a)", "resolution", "resolution_a"),
    "pdb": ("associated pdb", "fitted pdb", "fitted pdbs", "pdb", "pdb ids", "pdb_id"),
    "citation": ("citation title", "citation", "citation_title"),
    "title": ("entry title", "title"),
    "status": ("status",),
}


def _find_columns(columns: list[str], path: str) -> dict[str, str | None]:
    lower = {c.strip().lower(): c for c in columns}
    found: dict[str, str | None] = {}
    for name, aliases in _ALIASES.items():
        found[name] = next((lower[a] for a in aliases if a in lower), None)
    missing = [n for n in ("emdb_id", "resolution", "pdb", "citation") if found[n] is None]
    if missing:
        raise InputError(
            f"search export lacks the column(s) {', '.join(missing)} (has: {', '.join(columns)})",
            path,
        )
    return found


def _emdb_id(value: str) -> str:
    match = re.fullmatch(r"(?:EMD[-_]?)?(\d+)", str(value).strip(), flags=re.IGNORECASE)
    if not match:
        raise ValueError(value)
    return f"EMD-{int(match.group(1)):04d}"


def _pdb_ids(value: str) -> list[str]:
    return [p.lower() for p in re.split(r"[\s,;]+", str(value).strip()) if p]


def read_search_export(search_csv: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Read an EMDB search export (CSV) into columns ``emdb_id, key, pdb_ids, resolution,
    title, citation, status`` (``pdb_ids`` a list; ``resolution`` float, NaN where unusable)."""
    if isinstance(search_csv, pd.DataFrame):
        raw, where = search_csv.astype(str), "search export"
    else:
        where = str(search_csv)
        if not Path(search_csv).is_file():
            raise InputError("no such file (the EMDB search export)", where)
        try:
            raw = pd.read_csv(search_csv, dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise InputError(f"not a readable CSV ({exc})", where) from exc
    cols = _find_columns(list(raw.columns), where)
    bad = []
    ids = []
    for value in raw[cols["emdb_id"]]:
        try:
            ids.append(_emdb_id(value))
        except ValueError:
            bad.append(value)
            ids.append(None)
    if bad:
        raise InputError(f"{len(bad)} EMDB id(s) unreadable, e.g. {bad[0]!r}", where)
    out = pd.DataFrame(
        {
            "emdb_id": ids,
            "pdb_ids": raw[cols["pdb"]].map(_pdb_ids),
            "resolution": pd.to_numeric(raw[cols["resolution"]], errors="coerce"),
            "title": raw[cols["title"]] if cols["title"] else "",
            "citation": raw[cols["citation"]].fillna(""),
            "status": raw[cols["status"]].str.strip().str.upper() if cols["status"] else "REL",
        }
    )
    out["key"] = out["emdb_id"].str.replace("EMD-", "emd_", regex=False)
    out["number"] = out["emdb_id"].str[4:].astype(int)
    if out["emdb_id"].duplicated().any():
        dup = out.loc[out["emdb_id"].duplicated(), "emdb_id"].iloc[0]
        raise InputError(f"EMDB id {dup} appears more than once", where)
    return out


def resolution_bin(resolution: Any, bin_width_A: float = 0.1) -> np.ndarray:
    """Bin index of each resolution: floor(resolution / width), robust to float noise
    (3.3 / 0.1 = 32.999999999999996 lands in bin 33)."""
    values = np.asarray(resolution, dtype=float) / bin_width_A
    return np.floor(np.round(values, 6)).astype(int)


def bin_histogram(resolutions: Any, *, bin_width_A: float = 0.1) -> dict[float, int]:
    """``{bin lower edge (Å): count}`` sorted by edge."""
    bins = resolution_bin(resolutions, bin_width_A)
    edges, counts = np.unique(bins, return_counts=True)
    return {round(float(e) * bin_width_A, 6): int(c) for e, c in zip(edges, counts, strict=True)}


def _normalise_counts(voxel_counts: Mapping[Any, Any] | None) -> dict[str, int]:
    if not voxel_counts:
        return {}
    counts: dict[str, int] = {}
    for key, value in voxel_counts.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        try:
            counts[_emdb_id(str(key).replace("emd_", "").replace("EMD_", ""))] = int(value)
        except ValueError as exc:
            raise InputError(f"voxel_counts: {key!r} is not an EMDB id") from exc
    return counts


def citation_key(title: str) -> str:
    """A citation title folded for comparison: HTML entities decoded, white space collapsed,
    case folded, a final period dropped."""
    text = re.sub(r"\s+", " ", html.unescape(str(title))).strip().casefold()
    return text[:-1].rstrip() if text.endswith(".") else text


def eligible_entries(search_csv: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Rules 1-4: released, exactly one PDB, a resolution, best resolution per citation.

    Returns the candidates (``frame.attrs["counts"]`` holds the count after each rule).
    """
    frame = read_search_export(search_csv)
    counts = {"rows": len(frame)}
    frame = frame[frame["status"] == "REL"]
    counts["released"] = len(frame)
    frame = frame[frame["pdb_ids"].map(len) == 1].copy()
    frame["pdb_id"] = frame["pdb_ids"].map(lambda ids: ids[0])
    counts["one_pdb"] = len(frame)
    frame = frame[np.isfinite(frame["resolution"]) & (frame["resolution"] > 0)]
    counts["with_resolution"] = len(frame)
    citation = frame["citation"].map(citation_key)
    no_citation = citation.map(lambda t: bool(PLACEHOLDER_CITATIONS.fullmatch(t)))
    # entries without a citation each form their own group
    frame = frame.assign(group=np.where(no_citation, "\0" + frame["emdb_id"], citation))
    frame = frame.sort_values(["resolution", "number"], kind="stable")
    frame = frame.drop_duplicates("group", keep="first")
    counts["one_per_citation"] = len(frame)
    frame = frame.drop(columns=["group", "pdb_ids"]).sort_values("number", kind="stable")
    frame.attrs["counts"] = counts
    return frame.reset_index(drop=True)


def select_entries(
    search_csv: str | os.PathLike | pd.DataFrame,
    *,
    per_bin: int = 5,
    bin_width_A: float = 0.1,
    seed: int = 0,
    max_voxels: int | None = 512**3,
    voxel_counts: Mapping[Any, Any] | None = None,
) -> pd.DataFrame:
    """Select entries from an EMDB search export the way the study did (see module doc).

    Returns a DataFrame with :data:`COLUMNS`: ``key`` (file-safe, ``emd_3488``), ``emdb_id``
    (``EMD-3488``), ``pdb_id`` (lower case), ``resolution`` (Å), ``resolution_bin`` (lower edge,
    Å), ``title``, ``citation``, ``voxels`` (nullable Int64: NA where unknown), sorted by
    resolution then EMDB number. ``frame.attrs["counts"]`` holds the count after each rule.
    """
    if per_bin < 1:
        raise InputError(f"per_bin={per_bin}: must be at least 1")
    if not (bin_width_A > 0 and math.isfinite(bin_width_A)):
        raise InputError(f"bin_width_A={bin_width_A}: must be a positive number")
    counts_by_id = _normalise_counts(voxel_counts)
    pool = eligible_entries(search_csv)
    counts = dict(pool.attrs["counts"])
    pool = pool.assign(bin=resolution_bin(pool["resolution"].to_numpy(), bin_width_A))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    too_big = 0
    for _, members in pool.groupby("bin", sort=True):
        members = members.sort_values("number", kind="stable")  # independent of CSV row order
        taken = 0
        for position in rng.permutation(len(members)):
            row = members.iloc[position]
            voxels = counts_by_id.get(row["emdb_id"])
            if max_voxels is not None and voxels is not None and voxels > max_voxels:
                too_big += 1
                continue
            chosen.append(members.index[position])
            taken += 1
            if taken == per_bin:
                break
    out = pool.loc[chosen].sort_values(["resolution", "number"], kind="stable")
    out = out.assign(
        resolution_bin=np.round(out["bin"].to_numpy() * bin_width_A, 6),
        voxels=pd.array([counts_by_id.get(e) for e in out["emdb_id"]], dtype="Int64"),
    )
    counts["over_max_voxels_skipped"] = too_big
    counts["selected"] = len(out)
    counts["voxels_unknown"] = int(out["voxels"].isna().sum())
    out = out[COLUMNS].reset_index(drop=True)
    out.attrs["counts"] = counts
    logger.info("dataset selection: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    return out


def write_entries_csv(
    frame: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write a selection (or any DataFrame) as CSV, atomically; returns the path."""
    check_output_path(path, overwrite=overwrite)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return atomic_write_text(path, buffer.getvalue(), overwrite=overwrite)
