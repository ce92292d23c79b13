# Continuous fields of each EMDB map, cropped at the contour level: the neural field (the GPU
# job: resources gpu=1, run inside the GPU slot allocator, CPU where no GPU exists), its
# re-creation as an MRC map, and the cubic-spline field (the baseline, seconds on a CPU).

FIT = section("fit")
FIT_THREADS, FIT_MEM, FIT_RUNTIME = rule_resources("fit", 4000, 60, 2)
GPU = {"gpu": 1} if FIT.get("gpu", True) else {}


def fit_options(wildcards=None):
    """Training options shared by the map fits and the interpolation experiment."""
    opts = [f"--preset {FIT.get('preset', 'fast')}", f"--seed {int(FIT.get('seed', 0))}",
            f"--margin {float(FIT.get('margin_A', 5.0))}"]
    if FIT.get("max_epochs"):
        opts.append(f"--max-epochs {int(FIT['max_epochs'])}")
    if FIT.get("time_budget_s"):
        opts.append(f"--time-budget {float(FIT['time_budget_s'])}")
    if FIT.get("float16"):
        opts.append("--float16")
    return " ".join(opts)


rule fit_neural:
    """Neural map (one SIREN per region) of the EMDB map's contour crop."""
    input:
        map=MAP_GZ,
        info=ENTRY_INFO,
    output:
        neural=NEURAL,
        record=NEURAL_RECORD,
    params:
        contour=info_value("contour"),
        options=fit_options,
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/fit_neural/{entry}.log",
    benchmark:
        BENCH + "/fit_neural/{entry}.tsv"
    threads: FIT_THREADS
    resources:
        mem_mb=FIT_MEM,
        runtime=FIT_RUNTIME,
        **GPU,
    shell:
        "OMP_NUM_THREADS={threads} python {SCRIPTS}/with_gpu_slot.py --record {output.record} -- "
        "neural-em -q fit {input.map} -o {output.neural} --force --contour {params.contour} "
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
        map=MAP_GZ,
        info=ENTRY_INFO,
    output:
        SPLINE,
    params:
        contour=info_value("contour"),
        margin=float(FIT.get("margin_A", 5.0)),
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/fit_spline/{entry}.log",
    benchmark:
        BENCH + "/fit_spline/{entry}.tsv"
    threads: 1
    resources:
        mem_mb=FIT_MEM,
        runtime=30,
    shell:
        "neural-em -q fit {input.map} --field spline -o {output} --force "
        "--contour {params.contour} "
        "--margin {params.margin} > {log} 2>&1"


rule fit_learned:
    """Learned field of the same crop (the packaged network refines the map 2x; no training)."""
    input:
        map=MAP_GZ,
        info=ENTRY_INFO,
    output:
        LEARNED,
    params:
        contour=info_value("contour"),
        margin=float(FIT.get("margin_A", 5.0)),
    conda:
        "../../envs/fit.yaml"
    log:
        "logs/fit_learned/{entry}.log",
    benchmark:
        BENCH + "/fit_learned/{entry}.tsv"
    threads: 2
    resources:
        mem_mb=FIT_MEM,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} neural-em -q fit {input.map} --field learned -o {output} "
        "--force --contour {params.contour} --margin {params.margin} > {log} 2>&1"
