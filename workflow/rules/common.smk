# Named helpers shared by the rules. Everything here is computed when the
# Snakefile is parsed: the config is validated, the manifest read and the shard
# list planned (no checkpoint rules), so the DAG builds in seconds.
import os
import re
import sys
from pathlib import Path

import pandas as pd
from snakemake.settings.types import DeploymentMethod

from traitpipe.collection.images import source_file
from traitpipe.collection.manifest import ManifestError, load_manifest, outside_root
from traitpipe.collection.shards import shard_rows
from traitpipe.collection.urls import batch_file, fetch_batches, fetched_files, media_folder
from traitpipe.config import ConfigError, canonical_json, collection_file, validate_config
from traitpipe.plan import Plan, shard_size
from traitpipe.rules import collection_files, local_files, model_options, option, optional, reference_options, store
from traitpipe.preflight import preflight
from traitpipe.store.maps import map_path
from traitpipe.store.run import rows_digest, rows_path, run_config_path, urls_path, write_rows, write_run_config
from traitpipe.collection.references import find_references, parts_file

try:
    CFG = validate_config(config)
    MANIFEST = load_manifest(CFG)
    PROBLEMS = preflight(CFG, MANIFEST)  # the tree's species, checkpoint files, layer names
    if PROBLEMS:
        raise ConfigError("the run cannot start:\n  " + "\n  ".join(PROBLEMS))
except (ConfigError, ManifestError) as error:  # the one validation of a run: stop before any job
    print(f"traitpipe: {error}", file=sys.stderr)
    sys.exit(2)

RESULTS = CFG["results"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
# The manifest is read here, once: each shard's ingest gets the rows of its species
# (results/run/rows/<shard>.parquet) and every later step the images tables.
# shard_size: auto becomes a number here, before the run config is written: the jobs read that number.
CFG["shard_size"] = shard_size(CFG, MANIFEST["species"])
SHARD_ROWS = shard_rows(MANIFEST, CFG["shard_size"])
# Media named by URL (collection.fetch): each shard's URLs are one batch that the fetch rule downloads into a
# Parquet file of the media folder; the rows then name their images' cells there.
MEDIA = media_folder(CFG)
MEDIA_BATCHES, MEDIA_CELLS = fetch_batches(SHARD_ROWS, MEDIA) if CFG["collection"]["fetch"]["enabled"] else ({}, {})
MEDIA_FILES = {str(batch_file(MEDIA, name)) for name in MEDIA_BATCHES}
MANIFEST = fetched_files(MANIFEST, MEDIA_CELLS)
SHARD_ROWS = {shard: fetched_files(rows, MEDIA_CELLS) for shard, rows in SHARD_ROWS.items()}
SHARDS = list(SHARD_ROWS)
SPECIES_OF_SHARD = {shard: sorted(rows["species"].unique()) for shard, rows in SHARD_ROWS.items()}
ROWS_DIGEST = {shard: rows_digest(rows) for shard, rows in SHARD_ROWS.items()}
# Files the workflow writes for its jobs when they are about to run (onstart), never on a dry
# run: the validated config with every default (tables carry its hash in config_hash), the
# shards' manifest rows and the URLs of each batch to fetch. Their paths are constant params of the rules, not inputs: the settings
# params carry the config sections each rule depends on, and the ingest rule the digest of its
# shard's rows, so a change reruns exactly the jobs that read it.
RUN_CONFIG = str(run_config_path(RESULTS))
# Rules that compute on a GPU ask for one (resources: gpu=GPU): the slurm profile turns the request into
# sbatch --gpus=1, the default profile counts the machine's GPUs so that two jobs never share one.
# A config with device: cpu asks for none.
GPU = 0 if CFG["device"] == "cpu" else 1


def job_threads(rule):
    """Threads of a model job (and summarize): config threads.<rule> when given, else threads.default; null is
    every core of the run, so that such jobs run one at a time and feed a GPU. On a CPU-only machine 1 runs as
    many side by side as there are cores. The slurm profile's set-threads replaces this."""
    threads = CFG["threads"]
    return threads.get(rule, threads["default"]) or workflow.cores


onstart:
    write_run_config(RUN_CONFIG, CFG)
    for shard, rows in SHARD_ROWS.items():
        write_rows(rows_path(RESULTS, shard), rows, ROWS_DIGEST[shard])
    for batch, urls in MEDIA_BATCHES.items():
        write_rows(urls_path(RESULTS, batch), pd.DataFrame({"url": urls}), batch)


# Files the jobs read besides the tables: inputs of their rules, so that editing one reruns what read it.
def allowed(file):
    """Whether a job may open this file: under the collection root, fetched media, or anywhere with
    collection.allow_outside_root (a file outside is never an input, so Snakemake never reads it either; ingest makes it a failures row)."""
    return (CFG["collection"]["allow_outside_root"] or not outside_root(file, CFG["collection"]["root"])
            or source_file(file) in MEDIA_FILES)


REFERENCES = {species: files for species, files in find_references(
    MANIFEST, CFG["segment"]["masks"], CFG["collection"]["root"]).items() if allowed(files[0])}
# Jobs run `traitpipe job ...` from the environment that runs Snakemake (first on PATH), or with --sdm conda
# from the conda environment named traitpipe, which envs/cpu.yaml or envs/cuda.yaml create and traitpipe is
# installed into (README). An environment file would not do: Snakemake creates the environment from a copy
# of it, from which traitpipe itself cannot be installed (a pip path points elsewhere once copied).
envvars:
    "PATH",


os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
# An existing environment's name (envs/*.yaml), not a file; only with --sdm conda: Snakemake asks conda about a
# named environment even when it does not deploy it, and a machine without conda has none to ask.
CONDA_ENV = "traitpipe" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else None

# What the run builds (traitpipe/plan.py): the map products, the shards and every table file; tests read it too.
PLAN = Plan.make(CFG, SPECIES_OF_SHARD)
MAPPED, CAMS, TRUTH = PLAN.mapped, PLAN.cams, PLAN.truth
SCORE_PARTS, SCORE_MAPS, RETRIEVAL = PLAN.flags["score_parts"], PLAN.flags["score_maps"], PLAN.flags["retrieval"]
SCORE_FINETUNE = PLAN.flags["score_finetune"]
MAP_PRODUCTS = PLAN.map_products
# segment.checkpoint: train: a SAM 2 trained here on the true part masks, which segment and fine-tuning load
TRAINED_SAM2 = [f"{RESULTS}/models/sam2_trained.pt"] if PLAN.flags["trained_sam2"] else []

wildcard_constraints:
    shard=r"\d+",
    mapped="|".join(map(re.escape, MAPPED)) or "-",
    intervened="|".join(map(re.escape, PLAN.effect_models)) or "-",
    batch=r"[0-9a-f]{16}",
    **{name: "|".join(map(re.escape, values)) for name, values in PLAN.wildcard_values().items()},


def settings(*sections):
    """Canonical JSON of the config sections a rule depends on. Rules take it as params,
    so changing a section reruns exactly the rules that read it (Snakemake's params trigger)."""
    return canonical_json({name: CFG[name] for name in sections})


def config_files(model):
    """Input name -> files, of the files the config names for a model (traitpipe.products.Model.files)."""
    return {name: local_files(value) if kind == "local" else collection_files(value, CFG["collection"]["root"])
            for name, (value, kind) in model.file_settings(CFG).items()}


def heads_files(product, shards):
    """The ranked-heads tables (``prompt_heads``) of a product whose kind writes them, in these shards; else []."""
    kind = PLAN.kind(product)
    return [table_file(kind.table, s) for s in shards] if kind.table == "prompt_heads" else []


def table_file(table, shard, partition=None):
    """Path of one table file (see traitpipe.store.tables.table_path)."""
    return PLAN.table(table, shard, partition)


def map_file(product, shard):
    """The ``zarr.json`` of one Zarr map store (see traitpipe.store.maps.map_path): rules declare that file,
    not the store as a directory(), so Snakemake puts no timestamp file inside the Zarr hierarchy. The store
    appears whole (written aside, then renamed), so its zarr.json means a finished store."""
    return str(map_path(RESULTS, product, shard) / "zarr.json")


def reference_files(species):
    """The support image and reference mask of each of these species that has one (the file on disk: itself,
    or the archive or Parquet file that holds it)."""
    return sorted({source_file(file) for name in species if name in REFERENCES for file in REFERENCES[name]})


def shard_references(wildcards):
    """Reference files of the species in one shard: the segment job of that shard reads them."""
    return reference_files(SPECIES_OF_SHARD[wildcards.shard])


def shard_image_files(wildcards):
    """The image files one shard's ingest reads, those that exist (for an image inside a Darwin Core archive,
    the archive; for a URL, its fetched batch): a missing one is a failures row, not a missing input that would
    stop the run."""
    files = {source_file(file) for file in SHARD_ROWS[wildcards.shard]["file"]}
    return sorted(file for file in files if file in MEDIA_FILES or (allowed(file) and os.path.isfile(file)))


def truth_files(column, shard):
    """The truth masks (``parts_truth`` or ``trait_truth``) of one shard's images that exist: inputs of the
    jobs that score against them, so editing one reruns its scores. A missing one is a failures row."""
    if not TRUTH[column]:
        return []
    return [file for file in SHARD_ROWS[shard][column].unique() if file and os.path.isfile(file)]


PARTS_FILE = optional(parts_file(CFG["segment"]["parts"], CFG["collection"]["root"]))
PHYLOGENY = optional(collection_file(CFG, "phylogeny"))


def model_file(name):
    """A file under results/models/."""
    return f"{RESULTS}/models/{name}"
