# Shared helpers: config access, the entry list (decided at parse time, so a dry run plans every
# entry without any download), resources, the file layout under results/ and the functions the
# rules call (params, inputs, options).

import csv
import json
import os
import re

from neural_em.fields.kinds import FIELD_KINDS


def repo_path(value):
    """An input path from the config: absolute, or relative to the repository root."""
    if value is None:
        return None
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else REPO / path


def section(name):
    """A block of the config; validation filled in every default (config/schema.yaml holds
    them, and only it)."""
    return config[name]


def rule_resources(name):
    """(threads, mem_mb, runtime in minutes) of a rule group, from the config's resources."""
    res = config["download_resources"] if name == "download" else section(name)["resources"]
    return int(res["threads"]), int(res["mem_mb"]), int(res["runtime"])


def _read_voxel_counts(path):
    """emdb_id -> voxel count from the CSV the ``voxel_counts`` rule writes (or {})."""
    if path is None or not Path(path).is_file():
        return {}
    with open(path, newline="") as handle:
        return {row["emdb_id"]: int(row["voxels"]) for row in csv.DictReader(handle)
                if row.get("voxels") not in (None, "")}


def _entries_from_config():
    """The config's entries: EMDB entries and local maps, each checked here (files exist and
    read as a map or a model, names safe and unique, resolutions positive), so a bad entry
    stops the run before any job with a message naming it."""
    from neural_em.pipeline.entries import config_entries

    return config_entries(config.get("entries"))


def _entries_from_search():
    ds = section("dataset")
    csv_path = repo_path(ds["search_csv"])
    if csv_path is None:
        raise ValueError("config dataset.search_csv: required when dataset.source is 'search'")
    if not csv_path.is_file():
        raise FileNotFoundError(f"config dataset.search_csv: {csv_path} does not exist")
    from neural_em.pipeline.dataset import select_entries  # lazily: only the search mode

    counts_path = ds["voxel_counts"]
    frame = select_entries(
        csv_path,
        per_bin=int(ds["per_bin"]),
        bin_width_A=float(ds["bin_width_A"]),
        seed=int(ds["seed"]),
        max_voxels=int(ds["max_voxels"]),
        voxel_counts=_read_voxel_counts(counts_path) or None,
    )
    limit = ds["limit"]
    if limit:
        frame = frame.iloc[: int(limit)]
    entries = {}
    for row in frame.to_dict("records"):
        entries[row["key"]] = {
            "key": row["key"],
            "source": "emdb",
            "emdb_id": row["emdb_id"],
            "pdb_id": str(row["pdb_id"]).lower(),
            "resolution": float(row["resolution"]),
            "contour": None,  # EMDB's recommended contour, from the metadata
            "title": row.get("title", "") or "",
            "citation": row.get("citation", "") or "",
        }
    return entries


def is_local(key):
    """A local map (files named in the config) rather than an EMDB entry."""
    return ENTRIES[key].get("source") == "local"


def has_model(key):
    """Whether the entry has an atomic model (EMDB entries always: their fitted PDB)."""
    return not is_local(key) or ENTRIES[key].get("model") is not None


ENTRIES = (_entries_from_search() if section("dataset")["source"] == "search"
           else _entries_from_config())
KEYS = sorted(ENTRIES)
GRAPH_FIELDS = list(section("graph")["fields"])
GRAPH_METHODS = list(section("graph")["methods"])
INTERP_ON = bool(section("interpolation")["enabled"])
CHIMERA = section("interpolation")["chimera"] or os.environ.get("CHIMERA_PATH") or None
DEEPTRACER = section("deeptracer")["command"] or None
EMDB_KEYS = [k for k in KEYS if not is_local(k)]
REFERENCE_DIR = repo_path(config["reference_dir"])
if REFERENCE_DIR is not None and not REFERENCE_DIR.is_dir():
    REFERENCE_DIR = None  # optional: the study's results are shown only where present


wildcard_constraints:
    # exactly the configured keys (EMDB entries emd_N, local maps their names)
    entry="|".join(re.escape(k) for k in sorted(KEYS, key=len, reverse=True)),
    field="|".join(FIELD_KINDS),
    method="study|backbone",


def entry(wildcards):
    return ENTRIES[wildcards.entry]


def resolution(wildcards):
    return ENTRIES[wildcards.entry]["resolution"]


def map_input(wildcards):
    """The entry's map: the downloaded EMDB map, or a local map where it lies."""
    key = wildcards.entry
    return ENTRIES[key]["map"] if is_local(key) else MAP_GZ.format(entry=key)


def model_input(wildcards):
    """The entry's model: the downloaded PDB mmCIF, or a local model file (rules that need a
    model are requested only for entries that have one)."""
    key = wildcards.entry
    if not is_local(key):
        return MODEL.format(entry=key)
    if ENTRIES[key].get("model") is None:
        raise ValueError(f"{key}: a local map without a model has no model input")
    return ENTRIES[key]["model"]


def contour_option(wildcards, input):
    """``--contour X`` from the entry's info file (evaluated when the job runs), or nothing
    where the entry has no contour (a local map without one is fitted whole)."""
    contour = json.loads(Path(input.info).read_text())["contour"]
    return "" if contour is None else f"--contour {contour}"


def info_value(key):
    """A params function reading ``key`` from the entry's info file (evaluated when the job
    runs, after entry_info wrote it; a dry run shows <TBD>)."""

    def value(wildcards, input):
        return json.loads(Path(input.info).read_text())[key]

    return value


# File layout (per entry key: emd_3488 for an EMDB entry, the name of a local map). A local
# entry's map and model are read where they lie (never copied, never downloaded).
MAP_GZ = "results/data/{entry}/{entry}.map.gz"
METADATA = "results/data/{entry}/{entry}.metadata.json"
MODEL = "results/data/{entry}/{entry}_model.cif.gz"
FASTA = "results/data/{entry}/{entry}.fasta"
ENTRY_INFO = "results/data/{entry}/{entry}.entry.json"
NEURAL = "results/fits/{entry}/{entry}.neural"
NEURAL_RECORD = "results/fits/{entry}/{entry}.fit.json"
NEURAL_MRC = "results/fits/{entry}/{entry}_neural.mrc"
SPLINE = "results/fits/{entry}/{entry}_spline.neural"
#: A field fitted for its graphs only (by the fit_field rule), every kind but the neural and spline
#: fields, which have their own rules.
FIELD_FIT = "results/fits/{entry}/{entry}_{field}.neural"
FIELD_FIT_KINDS = "|".join(k for k in FIELD_KINDS if k not in ("neural", "spline"))
GRAPH = "results/graphs/{entry}/{field}.{method}.graph.json"
GRAPH_CIF = "results/graphs/{entry}/{field}.{method}.cif"
GRAPH_METRICS = "results/graphs/{entry}/{field}.{method}.metrics.json"
INTERP = "results/interpolation/{entry}.json"
CHIMERA_COARSE = "results/interpolation/{entry}/chimera/coarse.mrc"
CHIMERA_FINE = "results/interpolation/{entry}/chimera/fine.mrc"
CHIMERA_TRILINEAR = "results/interpolation/{entry}/chimera/trilinear.mrc"
CHIMERA_COMMANDS = "results/interpolation/{entry}/chimera/molmap.cmd"
VIEW_HTML = "results/view/{entry}.html"
VIEW_CXC = "results/view/{entry}.cxc"
VIEW_PML = "results/view/{entry}.pml"
DEEPTRACER_MODEL = "results/deeptracer/{entry}/model.cif"
DEEPTRACER_METRICS = "results/deeptracer/{entry}/metrics.json"
# Snakemake's benchmark files (time and memory of each job)
BENCH_FIT_NEURAL = "results/benchmarks/fit_neural/{entry}.tsv"
BENCH_FIT_SPLINE = "results/benchmarks/fit_spline/{entry}.tsv"
BENCH_FIT_FIELD = "results/benchmarks/fit_{field}/{entry}.tsv"
BENCH_GRAPH = "results/benchmarks/graph/{entry}_{field}_{method}.tsv"
BENCH_INTERP = "results/benchmarks/interpolation/{entry}.tsv"
BENCH_DEEPTRACER = "results/benchmarks/deeptracer/{entry}.tsv"


def graph_role(field, method):
    """The manifest role of a graph: graph_spline (study method), graph_spline_backbone."""
    from neural_em.pipeline.collect import graph_role as role

    return role(field, method)


def entry_files(key):
    """Role -> path of every per-entry file the collect step reads (the manifest)."""
    fmt = {"entry": key}
    local = is_local(key)
    files = {
        "entry_info": ENTRY_INFO.format(**fmt),
        "map": ENTRIES[key]["map"] if local else MAP_GZ.format(**fmt),
    }
    if has_model(key):
        files["model"] = ENTRIES[key]["model"] if local else MODEL.format(**fmt)
    if not local:
        files["fasta"] = FASTA.format(**fmt)
    files.update({
        "neural": NEURAL.format(**fmt),
        "neural_record": NEURAL_RECORD.format(**fmt),
        "neural_mrc": NEURAL_MRC.format(**fmt),
        "neural_bench": BENCH_FIT_NEURAL.format(**fmt),
        "spline": SPLINE.format(**fmt),
        "spline_bench": BENCH_FIT_SPLINE.format(**fmt),
    })
    for field in GRAPH_FIELDS:
        if field not in ("neural", "spline"):  # fitted for its graphs only (the fit_field rule)
            files[field] = FIELD_FIT.format(entry=key, field=field)
            files[f"{field}_bench"] = BENCH_FIT_FIELD.format(entry=key, field=field)
        for method in GRAPH_METHODS:
            role, names = graph_role(field, method), dict(entry=key, field=field, method=method)
            files[role] = GRAPH.format(**names)
            if has_model(key):  # without a model the graph is built, its metrics are absent
                files[f"{role}_metrics"] = GRAPH_METRICS.format(**names)
            files[f"{role}_bench"] = BENCH_GRAPH.format(**names)
    if INTERP_ON and has_model(key):  # the experiment simulates maps from the model
        files["interpolation"] = INTERP.format(**fmt)
        files["interpolation_bench"] = BENCH_INTERP.format(**fmt)
    if DEEPTRACER and not local:  # DeepTracer needs the sequences (FASTA) of a PDB entry
        files["deeptracer_metrics"] = DEEPTRACER_METRICS.format(**fmt)
        files["deeptracer_bench"] = BENCH_DEEPTRACER.format(**fmt)
    return files


def manifest():
    return {key: entry_files(key) for key in KEYS}


def all_entry_files():
    return [path for key in KEYS for path in entry_files(key).values()]


# ====================================================================== the rules' helpers
# (Snakemake's lint keeps functions out of the files that hold rules.)
# The programs the shell rules run around the command line (scripts/).
GPU_SLOT = str(SCRIPTS / "with_gpu_slot.py")
CHIMERA_MOLMAP = str(SCRIPTS / "chimera_molmap.py")


# ---------------------------------------------------------------------- dataset
def entry_info_input(wildcards):
    """EMDB entries: the downloaded metadata; local maps: the map file (its header)."""
    key = wildcards.entry
    if is_local(key):
        return {"map": ENTRIES[key]["map"]}
    return {"metadata": METADATA.format(entry=key)}


# ---------------------------------------------------------------------- fits
FIT = section("fit")
GPU = {"gpu": 1} if FIT["gpu"] else {}


def fit_options(wildcards=None):
    """Training options shared by the map fits and the interpolation experiment."""
    opts = [f"--preset {FIT['preset']}", f"--seed {int(FIT['seed'])}",
            f"--margin {float(FIT['margin_A'])}"]
    if FIT["max_epochs"]:
        opts.append(f"--max-epochs {int(FIT['max_epochs'])}")
    if FIT["time_budget_s"]:
        opts.append(f"--time-budget {float(FIT['time_budget_s'])}")
    if FIT["float16"]:
        opts.append("--float16")
    return " ".join(opts)


# ---------------------------------------------------------------------- interpolation
INTERP_CFG = section("interpolation")
INTERP_METHODS = list(INTERP_CFG["methods"])
INTERP_GPU = GPU if "neural" in INTERP_METHODS else {}


def neural_kwargs():
    kwargs = {"preset": FIT["preset"], "seed": int(FIT["seed"])}
    if FIT["max_epochs"]:
        kwargs["max_epochs"] = int(FIT["max_epochs"])
    if FIT["time_budget_s"]:
        kwargs["time_budget_s"] = float(FIT["time_budget_s"])
    return kwargs


def interpolation_inputs(wildcards):
    files = {"model": model_input(wildcards)}
    if CHIMERA:
        files.update(coarse=CHIMERA_COARSE.format(**wildcards),
                     fine=CHIMERA_FINE.format(**wildcards),
                     trilinear=CHIMERA_TRILINEAR.format(**wildcards))
    return files


# ---------------------------------------------------------------------- graphs
GRAPH_CFG = section("graph")


def graph_input(wildcards):
    """The fitted field file a graph is drawn from."""
    return (NEURAL if wildcards.field == "neural" else FIELD_FIT).format(**wildcards)


def graph_gpu(wildcards):
    """The graph of a neural field evaluates its networks: a GPU job where fits are."""
    return 1 if (wildcards.field == "neural" and GPU) else 0


def graph_launcher(wildcards):
    """Neural-field graphs run inside a GPU slot (which appends --device cuda|cpu)."""
    if wildcards.field == "neural":
        return f"python {GPU_SLOT} --"
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
        if not backbone["sse"]:
            opts.append("--no-sse")
    if GRAPH_CFG["seed_threshold"] is not None:
        opts.append(f"--seed-threshold {float(GRAPH_CFG['seed_threshold'])}")
    return " ".join(opts)


# ---------------------------------------------------------------------- views
def view_inputs(wildcards):
    """The map, its info (contour), the model where there is one, and every graph of the
    entry with its mmCIF (the ChimeraX file opens those); the page opens on the first."""
    key = wildcards.entry
    # backbone graphs first, the spline field first: the page opens showing the first graph
    methods = sorted(GRAPH_METHODS, key=lambda m: m != "backbone")
    fields = sorted(GRAPH_FIELDS, key=lambda f: f != "spline")
    names = [dict(entry=key, field=f, method=m) for m in methods for f in fields]
    files = {
        "map": map_input(wildcards),
        "info": ENTRY_INFO.format(entry=key),
        "graphs": [GRAPH.format(**n) for n in names],
        "mmcifs": [GRAPH_CIF.format(**n) for n in names],
    }
    if has_model(key):
        files["model"] = model_input(wildcards)
    return files


def view_options(wildcards, input):
    """--contour (from the entry's info), --model and one --graph per graph."""
    opts = [contour_option(wildcards, input)]
    if "model" in input.keys():
        opts.append(f"--model {input.model}")
    opts += [f"--graph {g}" for g in input.graphs]
    return " ".join(o for o in opts if o)


def all_views():
    return [path.format(entry=key) for key in KEYS for path in (VIEW_HTML, VIEW_CXC)]


# ---------------------------------------------------------------------- DeepTracer
def deeptracer_command(wildcards, input, output):
    info = json.loads(Path(input.info).read_text())
    return DEEPTRACER.format(map=input.map, fasta=input.fasta, output=output.model,
                             resolution=info["resolution"], contour=info["contour"])


# ---------------------------------------------------------------------- figures
def reference_files():
    if REFERENCE_DIR is None:
        return []
    names = ["paper_graph_evaluation.json", "paper_graph_residue_comparison.csv",
             "paper_interpolation_evaluation.csv"]
    return [str(REFERENCE_DIR / n) for n in names if (REFERENCE_DIR / n).is_file()]


def reference_dir(wildcards, input):
    """The folder of the study's results, from the figures' inputs (None where there are none)."""
    return str(Path(input.reference[0]).parent) if input.reference else None
