# Density graphs of each method (graph.methods: the study's, nodes at the locally densest
# points with edges up to adjacency_factor x resolution; the backbone graph, about one node
# per residue with edges along the chain) from the neural field and from the spline field of
# the same crop, written as JSON and mmCIF, and their C-alpha and chain metrics against the
# deposited model. A neural-field graph evaluates the
# networks millions of times (the study: a median 243 s on a GPU), so it is a GPU job (gpu=1,
# inside a GPU slot, CPU where none exists); a spline-field graph takes seconds on a CPU.

GRAPH_CFG = section("graph")
GRAPH_THREADS, GRAPH_MEM, GRAPH_RUNTIME = rule_resources("graph", 4000, 30, 1)


def graph_input(wildcards):
    return NEURAL.format(**wildcards) if wildcards.field == "neural" else SPLINE.format(**wildcards)


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
    opts = [f"--method {wildcards.method}", f"--resolution {res}"]
    if wildcards.method == "study":
        opts += [f"--adjacency {float(GRAPH_CFG['adjacency_factor']) * res:.6g}",
                 f"--min-nodes {int(GRAPH_CFG['min_num_nodes'])}"]
    else:
        backbone = GRAPH_CFG["backbone"]
        opts += [f"--node-spacing {float(backbone['node_spacing_A'])}",
                 f"--prune {float(backbone['prune_A'])}",
                 f"--min-nodes {int(backbone['min_num_nodes'])}"]
    if GRAPH_CFG.get("seed_threshold") is not None:
        opts.append(f"--seed-threshold {float(GRAPH_CFG['seed_threshold'])}")
    return " ".join(opts)


rule graph:
    """Density graph of one field ({field}: neural or spline) by one method ({method}: study
    or backbone) with its mmCIF."""
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
        "logs/graph/{entry}_{field}_{method}.log",
    benchmark:
        BENCH + "/graph/{entry}_{field}_{method}.tsv"
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
    """C-alpha recall, one-to-one precision, F1, coverage, precision, RMSD, nodes per C-alpha,
    chain recall, edge precision and mean degree against the model, and the node metrics of
    the local-maximum baseline of the deposited map."""
    input:
        graph=GRAPH,
        model=model_input,
        map=map_input,
    output:
        GRAPH_METRICS,
    params:
        resolution=resolution,
    conda:
        "../../envs/graph.yaml"
    log:
        "logs/evaluate_graph/{entry}_{field}_{method}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "python {SCRIPTS}/stdout_to_file.py {output} -- neural-em -q evaluate {input.graph} "
        "--model {input.model:q} --resolution {params.resolution} --map {input.map:q} --json "
        "2> {log}"
