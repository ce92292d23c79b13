# Downloads with requests (neural_em.pipeline.download): timeouts, retries with backoff,
# integrity checks (complete gzip stream, sane MRC header, parsable mmCIF, FASTA), atomic writes,
# and a local mirror laid out like the archives that is used before the network.
# They run on the submitting host (localrules): cluster nodes often have no network.

DL_THREADS, DL_MEM, DL_RUNTIME = rule_resources("download")


localrules:
    download_metadata,
    download_map,
    download_model,
    download_fasta,


rule download_metadata:
    """EMDB API entry record (resolution, recommended contour, map grid)."""
    output:
        METADATA,
    params:
        kind="metadata",
        entry=entry,
        download=section("download"),
        repo=str(REPO),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/download/{entry}.metadata.log",
    threads: DL_THREADS
    resources:
        mem_mb=DL_MEM,
        runtime=DL_RUNTIME,
    script:
        "../../scripts/download.py"


rule download_map:
    """The EMDB map, gzipped as the archive serves it (after entry_info checked its size)."""
    input:
        info=ENTRY_INFO,
    output:
        MAP_GZ,
    params:
        kind="map",
        entry=entry,
        download=section("download"),
        repo=str(REPO),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/download/{entry}.map.log",
    threads: DL_THREADS
    resources:
        mem_mb=DL_MEM,
        runtime=DL_RUNTIME,
    script:
        "../../scripts/download.py"


rule download_model:
    """The fitted model (PDB mmCIF, gzipped)."""
    output:
        MODEL,
    params:
        kind="model",
        entry=entry,
        download=section("download"),
        repo=str(REPO),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/download/{entry}.model.log",
    threads: DL_THREADS
    resources:
        mem_mb=DL_MEM,
        runtime=DL_RUNTIME,
    script:
        "../../scripts/download.py"


rule download_fasta:
    """The model's sequences (FASTA), for DeepTracer and the record."""
    output:
        FASTA,
    params:
        kind="fasta",
        entry=entry,
        download=section("download"),
        repo=str(REPO),
    conda:
        "../../envs/download.yaml"
    log:
        "logs/download/{entry}.fasta.log",
    threads: DL_THREADS
    resources:
        mem_mb=DL_MEM,
        runtime=DL_RUNTIME,
    script:
        "../../scripts/download.py"
