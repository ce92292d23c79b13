# Density graphs of each method (graph.methods: the study's, nodes at the locally densest
# points with edges up to adjacency_factor x resolution; the backbone graph, about one node
# per residue with edges along the chain) from the neural field and from the spline field of
# the same crop, written as JSON and mmCIF, and their C-alpha and chain metrics against the
# deposited model. A neural-field graph evaluates the
# networks millions of times (the study: a median 243 s on a GPU), so it is a GPU job (gpu=1,
# inside a GPU slot, CPU where none exists); a spline-field graph takes seconds on a CPU.

GRAPH_THREADS, GRAPH_MEM, GRAPH_RUNTIME = rule_resources("graph")


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
        BENCH_GRAPH
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
        "neural-em -q evaluate {input.graph} --model {input.model:q} "
        "--resolution {params.resolution} --map {input.map:q} -o {output} --force > {log} 2>&1"
