"""Rules ``download_*``: fetch one archive file with ``neural_em.pipeline.download``.

Kinds: ``map`` (EMDB map, gzipped), ``metadata`` (EMDB API entry JSON), ``model`` (PDB mmCIF,
gzipped), ``fasta`` (sequences). URLs come from the config's base URLs; a configured mirror (a
folder laid out like the archives, relative to the repository root) is used first, and with
``download.offline`` the network never is. Every file is checked (complete gzip stream, sane
MRC header, parsable mmCIF, FASTA) and written atomically.
"""

import logging
from pathlib import Path
from typing import Any

#: Named after the rule it runs for (download_map, download_model, ...) once run by Snakemake.
log = logging.getLogger("download")


def fetch_entry_file(
    kind: str, entry: dict[str, Any], dest: str, download: dict[str, Any], repo: str
) -> Path:
    from neural_em.pipeline import archive
    from neural_em.pipeline import download as dl

    emdb_number = entry["emdb_id"].split("-", 1)[1]
    pdb = entry["pdb_id"]
    if kind == "map":
        url = archive.emdb_map_url(emdb_number, base=download["emdb_base"])
        check = dl.check_mrc_header
    elif kind == "metadata":
        url = archive.emdb_metadata_url(emdb_number, base=download["emdb_api"])
        check = archive.check_json
    elif kind == "model":
        url, check = archive.pdb_mmcif_url(pdb, base=download["pdb_base"]), dl.check_mmcif
    elif kind == "fasta":
        url, check = archive.pdb_fasta_url(pdb, base=download["fasta_base"]), dl.check_fasta
    else:
        raise ValueError(f"unknown download kind {kind!r}")
    mirror = download["mirror"]
    if mirror is not None and not Path(mirror).is_absolute():
        mirror = str(Path(repo) / mirror)
    log.info(
        "%s %s: %s (mirror: %s, offline: %s)",
        entry["emdb_id"],
        kind,
        url,
        mirror,
        download["offline"],
    )
    return dl.fetch(
        url,
        dest,
        timeout_s=float(download["timeout_s"]),
        retries=int(download["retries"]),
        backoff_s=float(download["backoff_s"]),
        validate=check,
        mirror_root=mirror,
        offline=bool(download["offline"]),
    )


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    log = setup_logging(smk)
    fetch_entry_file(
        smk.params.kind,
        dict(smk.params.entry),
        smk.output[0],
        dict(smk.params.download),
        smk.params.repo,
    )
