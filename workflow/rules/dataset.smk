# The dataset: the entry list is decided at parse time (common.smk) from the config's entries or
# from the EMDB search export, so `snakemake -n` plans every entry before any download. These
# rules record the selection and, after the metadata downloads, the voxel counts that let the
# next run drop maps over dataset.max_voxels (as the study did).


localrules:
    dataset,
    voxel_counts,
    entry_info,


rule dataset:
    """Write the selected entries (one row per map) as a table."""
    input:
        [repo_path(section("dataset")["search_csv"])]
        if section("dataset")["source"] == "search" else [],
    output:
        report("results/dataset/entries.csv", caption="../report/dataset.rst",
               category="Dataset"),
    params:
        entries=[ENTRIES[k] for k in KEYS],
        source=section("dataset")["source"],
    conda:
        "../../envs/download.yaml"
    log:
        "logs/dataset.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../../scripts/write_entries.py"


rule voxel_counts:
    """Voxel counts of the selected maps from their EMDB metadata (no map download)."""
    input:
        expand(METADATA, entry=EMDB_KEYS),
    output:
        section("dataset")["voxel_counts"] or "results/dataset/voxel_counts.csv",
    params:
        entry_keys=EMDB_KEYS,
        max_voxels=int(section("dataset")["max_voxels"]),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/voxel_counts.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../../scripts/voxel_counts.py"


rule entry_info:
    """One entry's facts for the later rules: resolution, contour, grid (config + EMDB, or the
    local map's header)."""
    input:
        unpack(entry_info_input),
    output:
        ENTRY_INFO,
    params:
        entry=entry,
        max_voxels=int(section("dataset")["max_voxels"]),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/entry_info/{entry}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../../scripts/entry_info.py"
