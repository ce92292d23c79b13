# Shared helpers: config access, the entry list (decided at parse time, so a dry run plans every
# entry without any download), resources and the file layout under results/.

import csv
import json
import os
import re


def repo_path(value):
    """An input path from the config: absolute, or relative to the repository root."""
    if value is None:
        return None
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else REPO / path


def section(name):
    return config.get(name) or {}


def rule_resources(name, default_mem_mb, default_runtime, default_threads=1):
    """(threads, mem_mb, runtime in minutes) of a rule group, from the config's resources."""
    if name == "download":
        res = config.get("download_resources") or {}
    else:
        res = section(name).get("resources") or {}
    return (int(res.get("threads", default_threads)), int(res.get("mem_mb", default_mem_mb)),
            int(res.get("runtime", default_runtime)))


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
    csv_path = repo_path(ds.get("search_csv"))
    if csv_path is None:
        raise ValueError("config dataset.search_csv: required when dataset.source is 'search'")
    if not csv_path.is_file():
        raise FileNotFoundError(f"config dataset.search_csv: {csv_path} does not exist")
    from neural_em.pipeline.dataset import select_entries  # lazily: only the search mode

    counts_path = ds.get("voxel_counts")
    frame = select_entries(
        csv_path,
        per_bin=int(ds.get("per_bin", 5)),
        bin_width_A=float(ds.get("bin_width_A", 0.1)),
        seed=int(ds.get("seed", 0)),
        max_voxels=int(ds.get("max_voxels", 512**3)),
        voxel_counts=_read_voxel_counts(counts_path) or None,
    )
    limit = ds.get("limit")
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
INTERP_ON = bool(section("interpolation").get("enabled", True))
CHIMERA = section("interpolation").get("chimera") or os.environ.get("CHIMERA_PATH") or None
DEEPTRACER = section("deeptracer").get("command") or None
EMDB_KEYS = [k for k in KEYS if not is_local(k)]
REFERENCE_DIR = repo_path(config.get("reference_dir"))
if REFERENCE_DIR is not None and not REFERENCE_DIR.is_dir():
    REFERENCE_DIR = None  # optional: the study's results are shown only where present


wildcard_constraints:
    # exactly the configured keys (EMDB entries emd_N, local maps their names)
    entry="|".join(re.escape(k) for k in sorted(KEYS, key=len, reverse=True)),
    field="neural|spline",
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
DATA = "results/data/{entry}"
MAP_GZ = DATA + "/{entry}.map.gz"
METADATA = DATA + "/{entry}.metadata.json"
MODEL = DATA + "/{entry}_model.cif.gz"
FASTA = DATA + "/{entry}.fasta"
ENTRY_INFO = DATA + "/{entry}.entry.json"
NEURAL = "results/fits/{entry}/{entry}.neural"
NEURAL_RECORD = "results/fits/{entry}/{entry}.fit.json"
NEURAL_MRC = "results/fits/{entry}/{entry}_neural.mrc"
SPLINE = "results/fits/{entry}/{entry}_spline.neural"
GRAPH = "results/graphs/{entry}/{field}.{method}.graph.json"
GRAPH_CIF = "results/graphs/{entry}/{field}.{method}.cif"
GRAPH_METRICS = "results/graphs/{entry}/{field}.{method}.metrics.json"
INTERP = "results/interpolation/{entry}.json"
CHIMERA_DIR = "results/interpolation/{entry}/chimera"
DEEPTRACER_MODEL = "results/deeptracer/{entry}/model.cif"
DEEPTRACER_METRICS = "results/deeptracer/{entry}/metrics.json"
BENCH = "results/benchmarks"


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
        "neural_bench": f"{BENCH}/fit_neural/{key}.tsv",
        "spline": SPLINE.format(**fmt),
        "spline_bench": f"{BENCH}/fit_spline/{key}.tsv",
    })
    for field in GRAPH_FIELDS:
        for method in GRAPH_METHODS:
            role, names = graph_role(field, method), dict(entry=key, field=field, method=method)
            files[role] = GRAPH.format(**names)
            if has_model(key):  # without a model the graph is built, its metrics are absent
                files[f"{role}_metrics"] = GRAPH_METRICS.format(**names)
            files[f"{role}_bench"] = f"{BENCH}/graph/{key}_{field}_{method}.tsv"
    if INTERP_ON and has_model(key):  # the experiment simulates maps from the model
        files["interpolation"] = INTERP.format(**fmt)
        files["interpolation_bench"] = f"{BENCH}/interpolation/{key}.tsv"
    if DEEPTRACER and not local:  # DeepTracer needs the sequences (FASTA) of a PDB entry
        files["deeptracer_metrics"] = DEEPTRACER_METRICS.format(**fmt)
        files["deeptracer_bench"] = f"{BENCH}/deeptracer/{key}.tsv"
    return files


def manifest():
    return {key: entry_files(key) for key in KEYS}


def all_entry_files():
    return [path for key in KEYS for path in entry_files(key).values()]
