# The interpolation experiment, per entry: a map simulated from the model at the entry's
# resolution (grid spacing resolution/3) and the control simulated at 0.2 Å on an aligned grid;
# the first resampled onto the control's grid by trilinear, cubic-spline, Fourier and neural
# interpolation; errors at the control's non-zero voxels. The library simulates (a Gaussian per
# C, N, O atom, as the study's `molmap #0@C,N,O`); where the config names a Chimera executable
# (or CHIMERA_PATH is set) Chimera's molmap and `vop resample` make the maps instead, as in the
# study.

INTERP_THREADS, INTERP_MEM, INTERP_RUNTIME = rule_resources("interpolation")


if CHIMERA:

    rule chimera_maps:
        """Chimera: molmap at the resolution and at 0.2 Å, and vop resample onto the fine grid."""
        input:
            model=model_input,
        output:
            coarse=CHIMERA_COARSE,
            fine=CHIMERA_FINE,
            trilinear=CHIMERA_TRILINEAR,
            commands=CHIMERA_COMMANDS,
        params:
            chimera=CHIMERA,
            resolution=resolution,
            fine_step=float(INTERP_CFG["fine_step_A"]),
            chimera_molmap=CHIMERA_MOLMAP,
        conda:
            "../../envs/interpolation.yaml"
        log:
            "logs/chimera_maps/{entry}.log",
        threads: 1
        resources:
            mem_mb=INTERP_MEM,
            runtime=INTERP_RUNTIME,
        shell:
            "python {params.chimera_molmap:q} --model {input.model:q} "
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
        fine_step_A=float(INTERP_CFG["fine_step_A"]),
        max_eval_points=INTERP_CFG["max_eval_points"],
        neural_kwargs=neural_kwargs(),
        chimera=bool(CHIMERA),
    conda:
        "../../envs/interpolation.yaml"
    log:
        "logs/interpolation/{entry}.log",
    benchmark:
        BENCH_INTERP
    threads: INTERP_THREADS
    resources:
        mem_mb=INTERP_MEM,
        runtime=INTERP_RUNTIME,
        **INTERP_GPU,
    script:
        "../../scripts/interpolation.py"
