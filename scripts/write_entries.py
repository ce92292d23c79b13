"""Rule ``dataset``: write the selected entries (decided when the workflow was parsed) as CSV."""

import io

import pandas as pd

from neural_em.atomic import atomic_write_text

COLUMNS = [
    "key",
    "emdb_id",
    "pdb_id",
    "resolution",
    "contour",
    "title",
    "citation",
    "source",
    "map",
    "model",
]


def write_entries(entries: list[dict], path: str) -> pd.DataFrame:
    frame = pd.DataFrame(entries, columns=COLUMNS).sort_values(["resolution", "key"])
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    atomic_write_text(path, buffer.getvalue())
    return frame


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    log = setup_logging(smk)
    frame = write_entries(smk.params.entries, smk.output[0])
    log.info("%d entries (source: %s) -> %s", len(frame), smk.params.source, smk.output[0])
