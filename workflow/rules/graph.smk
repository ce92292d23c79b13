# Density graphs (nodes at the locally densest points, edges up to adjacency_factor x resolution)
# from the neural field and from the spline field of the same crop, written as JSON and mmCIF,
# and their C-alpha metrics against the deposited model. A neural-field graph evaluates the
# networks millions of times (the study: a median 243 s on a GPU), so it is a GPU job (gpu=1,
# inside a GPU slot, CPU where none exists); a spline-field graph takes seconds on a CPU.

GRAPH_CFG = section("graph")
GRAPH_THREADS, GRAPH_MEM, GRAPH_RUNTIME = rule_resources("graph", 4000, 30, 1)


def graph_input(wildcards):
    return {"neural": NEURAL, "learned": LEARNED}.get(wildcards.field, SPLINE).format(**wildcards)


def graph_gpu(wildcards):
    """The graph of a neural field evaluates its networks: a GPU job where fits are."""
    return 1 if (wildcards.field == "neural" and GPU) else 0


def graph_launcher(wildcards):
    """Neural-field graphs run inside a GPU slot (which appends --device cuda|cpu)."""
    if wildcards.field == "neural":
        return f"python {SCRIPTS}/with_gpu_slot.py --"
    return ""


def graph_options(wildcards):
    res = resolution(wildcards)
    opts = [f"--resolution {res}",
            f"--adjacency {float(GRAPH_CFG.get('adjacency_factor', 2.0)) * res:.6g}",
            f"--min-nodes {int(GRAPH_CFG.get('min_num_nodes', 10))}"]
    if GRAPH_CFG.get("seed_threshold") is not None:
        opts.append(f"--seed-threshold {float(GRAPH_CFG['seed_threshold'])}")
    return " ".join(opts)


rule graph:
    """Density graph of one field ({field}: neural or spline) with its mmCIF."""
    input:
        graph_input,
    output:
        graph=GRAPH,
        mmcif=GRAPH_CIF,
    params:
        options=graph_options,
        launcher=graph_launcher,
    conda:
        "../../envs/graph.yaml"
    log:
        "logs/graph/{entry}_{field}.log",
    benchmark:
        BENCH + "/graph/{entry}_{field}.tsv"
    threads: GRAPH_THREADS
    resources:
        mem_mb=GRAPH_MEM,
        runtime=GRAPH_RUNTIME,
        gpu=graph_gpu,
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} neural-em -q graph {input} "
        "--field {wildcards.field} {params.options} -o {output.graph} --mmcif {output.mmcif} "
        "> {log} 2>&1"


rule evaluate_graph:
    """C-alpha recall, coverage, precision, RMSD, nodes per C-alpha against the model, and
    the same for the local-maximum baseline of the deposited map."""
    input:
        graph=GRAPH,
        model=MODEL,
        map=MAP_GZ,
    output:
        GRAPH_METRICS,
    params:
        resolution=resolution,
    conda:
        "../../envs/graph.yaml"
    log:
        "logs/evaluate_graph/{entry}_{field}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "python {SCRIPTS}/stdout_to_file.py {output} -- neural-em -q evaluate {input.graph} "
        "--model {input.model} --resolution {params.resolution} --map {input.map} --json "
        "2> {log}"
