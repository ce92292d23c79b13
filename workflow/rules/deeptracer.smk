# DeepTracer (a deep-learning model builder the study compared with) runs only where the config
# names its command (deeptracer.command, a template with {map}, {fasta}, {output} and optionally
# {resolution}, {contour}); without it the tables say "not run", never a number.

if DEEPTRACER:
    DT_THREADS, DT_MEM, DT_RUNTIME = rule_resources("deeptracer", 16000, 240, 2)

    def deeptracer_command(wildcards, input, output):
        info = json.loads(Path(input.info).read_text())
        return DEEPTRACER.format(map=input.map, fasta=input.fasta, output=output.model,
                                 resolution=info["resolution"], contour=info["contour"])

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
        conda:
            "../../envs/graph.yaml"
        log:
            "logs/deeptracer/{entry}.log",
        benchmark:
            BENCH + "/deeptracer/{entry}.tsv"
        threads: DT_THREADS
        resources:
            mem_mb=DT_MEM,
            runtime=DT_RUNTIME,
            gpu=1,
        shell:
            "python {SCRIPTS}/with_gpu_slot.py --no-device-flag -- {params.command} > {log} 2>&1"

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
