"""Rule ``voxel_counts``: voxel counts of the selected maps from their EMDB metadata.

Writes ``emdb_id,key,shape_xyz,voxels,over_limit``; the next parse of the workflow reads it
and the dataset selection drops maps over ``dataset.max_voxels`` before choosing per bin.
"""

import io
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("voxel_counts")  # the rule's name


def run(smk: Any) -> None:
    import csv

    from neural_em.atomic import atomic_write_text
    from neural_em.pipeline.archive import parse_emdb_metadata

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["emdb_id", "key", "shape_xyz", "voxels", "over_limit"])
    over = 0
    # Metadata of entries a previous selection dropped stay in results/data: keep their counts,
    # or the next selection would bring them back.
    paths = dict(zip(smk.params.entry_keys, smk.input, strict=True))
    data_dir = Path(smk.output[0]).resolve().parents[1] / "data"
    for path in sorted(data_dir.glob("emd_*/emd_*.metadata.json")):
        paths.setdefault(path.parent.name, str(path))
    for key, path in sorted(paths.items()):
        meta = parse_emdb_metadata(path)
        shape = meta.get("shape_xyz") or meta.get("dimensions")
        voxels = int(shape[0]) * int(shape[1]) * int(shape[2]) if shape else ""
        big = bool(voxels) and voxels > int(smk.params.max_voxels)
        over += big
        emdb_id = "EMD-" + key.split("_", 1)[1]
        writer.writerow([emdb_id, key, " ".join(str(n) for n in shape or []), voxels, big])
    atomic_write_text(smk.output[0], buffer.getvalue())
    log.info(
        "%d maps (%d of this selection), %d over %d voxels",
        len(paths),
        len(smk.input),
        over,
        smk.params.max_voxels,
    )


smk = globals().get("snakemake")
if smk is not None:
    from _rule import setup_logging

    setup_logging(smk)
    run(smk)
