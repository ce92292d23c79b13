# Shared helpers: config access, the entry list (decided at parse time, so a dry run plans every
# entry without any download), resources and the file layout under results/.

import csv
import json
import os


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
    entries = {}
    for item in config.get("entries") or []:
        number = item["emdb_id"].split("-", 1)[1]
        key = f"emd_{number}"
        if key in entries:
            raise ValueError(f"config entries: {item['emdb_id']} is listed twice")
        entries[key] = {
            "key": key,
            "emdb_id": item["emdb_id"],
            "pdb_id": item["pdb_id"].lower(),
            "resolution": float(item["resolution"]),
            "contour": item.get("contour"),
            "title": item.get("title", ""),
            "citation": item.get("citation", ""),
        }
    if not entries:
        raise ValueError("config: dataset.source is 'entries' but the entries list is empty")
    return entries


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
            "emdb_id": row["emdb_id"],
            "pdb_id": str(row["pdb_id"]).lower(),
            "resolution": float(row["resolution"]),
            "contour": None,  # EMDB's recommended contour, from the metadata
            "title": row.get("title", "") or "",
            "citation": row.get("citation", "") or "",
        }
    return entries


ENTRIES = (_entries_from_search() if section("dataset")["source"] == "search"
           else _entries_from_config())
KEYS = sorted(ENTRIES)
GRAPH_FIELDS = list(section("graph").get("fields") or ["neural", "spline"])
INTERP_ON = bool(section("interpolation").get("enabled", True))
CHIMERA = section("interpolation").get("chimera") or os.environ.get("CHIMERA_PATH") or None
DEEPTRACER = section("deeptracer").get("command") or None
REFERENCE_DIR = repo_path(config.get("reference_dir"))
if REFERENCE_DIR is not None and not REFERENCE_DIR.is_dir():
    REFERENCE_DIR = None  # optional: the study's results are shown only where present


wildcard_constraints:
    entry="emd_[0-9]+",
    field="neural|spline|learned",


def entry(wildcards):
    return ENTRIES[wildcards.entry]


def resolution(wildcards):
    return ENTRIES[wildcards.entry]["resolution"]


def info_value(key):
    """A params function reading ``key`` from the entry's info file (evaluated when the job
    runs, after entry_info wrote it; a dry run shows <TBD>)."""

    def value(wildcards, input):
        return json.loads(Path(input.info).read_text())[key]

    return value


# File layout (per entry key such as emd_3488).
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
LEARNED = "results/fits/{entry}/{entry}_learned.neural"
GRAPH = "results/graphs/{entry}/{field}.graph.json"
GRAPH_CIF = "results/graphs/{entry}/{field}.cif"
GRAPH_METRICS = "results/graphs/{entry}/{field}.metrics.json"
INTERP = "results/interpolation/{entry}.json"
CHIMERA_DIR = "results/interpolation/{entry}/chimera"
DEEPTRACER_MODEL = "results/deeptracer/{entry}/model.cif"
DEEPTRACER_METRICS = "results/deeptracer/{entry}/metrics.json"
BENCH = "results/benchmarks"


def entry_files(key):
    """Role -> path of every per-entry file the collect step reads (the manifest)."""
    fmt = {"entry": key}
    files = {
        "entry_info": ENTRY_INFO.format(**fmt),
        "map": MAP_GZ.format(**fmt),
        "model": MODEL.format(**fmt),
        "fasta": FASTA.format(**fmt),
        "neural": NEURAL.format(**fmt),
        "neural_record": NEURAL_RECORD.format(**fmt),
        "neural_mrc": NEURAL_MRC.format(**fmt),
        "neural_bench": f"{BENCH}/fit_neural/{key}.tsv",
        "spline": SPLINE.format(**fmt),
        "spline_bench": f"{BENCH}/fit_spline/{key}.tsv",
    }
    for field in GRAPH_FIELDS:
        files[f"graph_{field}"] = GRAPH.format(entry=key, field=field)
        files[f"graph_{field}_metrics"] = GRAPH_METRICS.format(entry=key, field=field)
        files[f"graph_{field}_bench"] = f"{BENCH}/graph/{key}_{field}.tsv"
    if INTERP_ON:
        files["interpolation"] = INTERP.format(**fmt)
        files["interpolation_bench"] = f"{BENCH}/interpolation/{key}.tsv"
    if DEEPTRACER:
        files["deeptracer_metrics"] = DEEPTRACER_METRICS.format(**fmt)
        files["deeptracer_bench"] = f"{BENCH}/deeptracer/{key}.tsv"
    return files


def manifest():
    return {key: entry_files(key) for key in KEYS}


def all_entry_files():
    return [path for key in KEYS for path in entry_files(key).values()]
