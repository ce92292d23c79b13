# Each entry's map, model and graphs in one interactive page (NGL, self-contained, opens
# offline) and in a ChimeraX command file with the same colours (results/view/{entry}.cxc,
# its map and model copies in results/view/{entry}/), and a PyMOL script opening the same
# files (results/view/{entry}.pml). See neural_em/view/.


rule view:
    """results/view/{entry}.html, .cxc and .pml: the map at its contour, the model, every
    graph."""
    input:
        unpack(view_inputs),
    output:
        html=VIEW_HTML,
        cxc=VIEW_CXC,
        pml=VIEW_PML,
    params:
        options=view_options,
    conda:
        "../../envs/graph.yaml"
    log:
        "logs/view/{entry}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "neural-em -q view {input.map:q} {params.options} --title {wildcards.entry} "
        "-o {output.html} --cxc {output.cxc} --pml {output.pml} --force > {log} 2>&1"
