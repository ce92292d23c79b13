# The interpolation experiment, per entry: a map simulated from the model at the entry's
# resolution (grid spacing resolution/3) and the control simulated at 0.2 Å on an aligned grid;
# the first resampled onto the control's grid by trilinear, cubic-spline, Fourier and neural
# interpolation; errors at the control's non-zero voxels. The library simulates (a Gaussian per
# C, N, O atom, as the study's `molmap #0@C,N,O`); where the config names a Chimera executable
# (or CHIMERA_PATH is set) Chimera's molmap and `vop resample` make the maps instead, as in the
# study.

INTERP_CFG = section("interpolation")
INTERP_THREADS, INTERP_MEM, INTERP_RUNTIME = rule_resources("interpolation", 6000, 60, 2)
INTERP_METHODS = list(INTERP_CFG.get("methods") or ["trilinear", "fourier", "spline", "neural"])
INTERP_GPU = GPU if "neural" in INTERP_METHODS else {}


def neural_kwargs():
    kwargs = {"preset": FIT.get("preset", "fast"), "seed": int(FIT.get("seed", 0))}
    if FIT.get("max_epochs"):
        kwargs["max_epochs"] = int(FIT["max_epochs"])
    if FIT.get("time_budget_s"):
        kwargs["time_budget_s"] = float(FIT["time_budget_s"])
    return kwargs


def interpolation_inputs(wildcards):
    files = {"model": model_input(wildcards)}
    if CHIMERA:
        base = CHIMERA_DIR.format(**wildcards)
        files.update(coarse=f"{base}/coarse.mrc", fine=f"{base}/fine.mrc",
                     trilinear=f"{base}/trilinear.mrc")
    return files


if CHIMERA:

    rule chimera_maps:
        """Chimera: molmap at the resolution and at 0.2 Å, and vop resample onto the fine grid."""
        input:
            model=model_input,
        output:
            coarse=CHIMERA_DIR + "/coarse.mrc",
            fine=CHIMERA_DIR + "/fine.mrc",
            trilinear=CHIMERA_DIR + "/trilinear.mrc",
            commands=CHIMERA_DIR + "/molmap.cmd",
        params:
            chimera=CHIMERA,
            resolution=resolution,
            fine_step=float(INTERP_CFG.get("fine_step_A", 0.2)),
        conda:
            "../../envs/interpolation.yaml"
        log:
            "logs/chimera_maps/{entry}.log",
        threads: 1
        resources:
            mem_mb=INTERP_MEM,
            runtime=INTERP_RUNTIME,
        shell:
            "python {SCRIPTS}/chimera_molmap.py --model {input.model:q} "
            "--resolution {params.resolution} --fine-step {params.fine_step} "
            "--coarse {output.coarse} --fine {output.fine} --trilinear {output.trilinear} "
            "--commands {output.commands} --chimera {params.chimera:q} > {log} 2>&1"


rule interpolation:
    """Errors of trilinear, spline, Fourier and neural resampling against the 0.2 Å control."""
    input:
        unpack(interpolation_inputs),
    output:
        INTERP,
    params:
        resolution=resolution,
        methods=INTERP_METHODS,
        fine_step_A=float(INTERP_CFG.get("fine_step_A", 0.2)),
        max_eval_points=INTERP_CFG.get("max_eval_points"),
        neural_kwargs=neural_kwargs(),
        chimera=bool(CHIMERA),
    conda:
        "../../envs/interpolation.yaml"
    log:
        "logs/interpolation/{entry}.log",
    benchmark:
        BENCH + "/interpolation/{entry}.tsv"
    threads: INTERP_THREADS
    resources:
        mem_mb=INTERP_MEM,
        runtime=INTERP_RUNTIME,
        **INTERP_GPU,
    script:
        "../../scripts/interpolation.py"
