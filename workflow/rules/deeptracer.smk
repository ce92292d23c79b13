# DeepTracer (a deep-learning model builder the study compared with) runs only where the config
# names its command (deeptracer.command, a template with {map}, {fasta}, {output} and optionally
# {resolution}, {contour}); without it the tables say "not run", never a number.

if DEEPTRACER:
    DT_THREADS, DT_MEM, DT_RUNTIME = rule_resources("deeptracer")

    rule deeptracer:
        """DeepTracer's model built from the map and the sequences."""
        input:
            map=MAP_GZ,
            fasta=FASTA,
            info=ENTRY_INFO,
        output:
            model=DEEPTRACER_MODEL,
        params:
            command=deeptracer_command,
            gpu_slot=GPU_SLOT,
        conda:
            "../../envs/graph.yaml"
        log:
            "logs/deeptracer/{entry}.log",
        benchmark:
            BENCH_DEEPTRACER
        threads: DT_THREADS
        resources:
            mem_mb=DT_MEM,
            runtime=DT_RUNTIME,
            gpu=1,
        shell:
            "python {params.gpu_slot:q} --no-device-flag -- {params.command} > {log} 2>&1"

    rule evaluate_deeptracer:
        """DeepTracer's C-alpha atoms matched to the deposited model's (as the study did)."""
        input:
            predicted=DEEPTRACER_MODEL,
            model=MODEL,
        output:
            DEEPTRACER_METRICS,
        conda:
            "../../envs/graph.yaml"
        log:
            "logs/evaluate_deeptracer/{entry}.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../../scripts/evaluate_model.py"
