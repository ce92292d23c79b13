# Continuous fields of each EMDB map, cropped at the contour level: the neural field (the GPU
# job: resources gpu=1, run inside the GPU slot allocator, CPU where no GPU exists), its
# re-creation as an MRC map, and the cubic-spline field (the baseline, seconds on a CPU).

FIT_THREADS, FIT_MEM, FIT_RUNTIME = rule_resources("fit")


rule fit_neural:
    """Neural map (one SIREN per region) of the map's contour crop (EMDB or local map)."""
    input:
        map=map_input,
        info=ENTRY_INFO,
    output:
        neural=NEURAL,
        record=NEURAL_RECORD,
    params:
        contour=contour_option,
        options=fit_options,
        gpu_slot=GPU_SLOT,
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/fit_neural/{entry}.log",
    benchmark:
        BENCH_FIT_NEURAL
    threads: FIT_THREADS
    resources:
        mem_mb=FIT_MEM,
        runtime=FIT_RUNTIME,
        **GPU,
    shell:
        "OMP_NUM_THREADS={threads} python {params.gpu_slot:q} --record {output.record} -- "
        "neural-em -q fit {input.map:q} -o {output.neural} --force {params.contour} "
        "{params.options} > {log} 2>&1"


rule resample_neural:
    """The neural map re-created as an MRC map at the map's own voxel size."""
    input:
        NEURAL,
    output:
        NEURAL_MRC,
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/resample_neural/{entry}.log",
    threads: 1
    resources:
        mem_mb=FIT_MEM,
        runtime=FIT_RUNTIME,
    shell:
        "OMP_NUM_THREADS={threads} neural-em -q resample {input} -o {output} --force "
        "> {log} 2>&1"


rule fit_spline:
    """Cubic B-spline field of the same crop (the classical baseline; no training)."""
    input:
        map=map_input,
        info=ENTRY_INFO,
    output:
        SPLINE,
    params:
        contour=contour_option,
        margin=float(FIT["margin_A"]),
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/fit_spline/{entry}.log",
    benchmark:
        BENCH_FIT_SPLINE
    threads: 1
    resources:
        mem_mb=FIT_MEM,
        runtime=30,
    shell:
        "neural-em -q fit {input.map:q} --field spline -o {output} --force "
        "{params.contour} "
        "--margin {params.margin} > {log} 2>&1"


rule fit_field:
    """A field of the same crop fitted without training, for its graphs: learned (the packaged
    network refines the map 2x), trilinear or Fourier."""
    input:
        map=map_input,
        info=ENTRY_INFO,
    output:
        FIELD_FIT,
    wildcard_constraints:
        field=FIELD_FIT_KINDS,
    params:
        contour=contour_option,
        margin=float(FIT["margin_A"]),
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/fit_{field}/{entry}.log",
    benchmark:
        BENCH_FIT_FIELD
    threads: 2
    resources:
        mem_mb=FIT_MEM,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} neural-em -q fit {input.map:q} --field {wildcards.field} "
        "-o {output} --force {params.contour} --margin {params.margin} > {log} 2>&1"
