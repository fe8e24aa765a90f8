# Named helpers shared by the rules. Everything here is computed when the
# Snakefile is parsed: the config is validated, the manifest read and the shard
# list planned (no checkpoint rules), so the DAG builds in seconds.
import sys
from pathlib import Path

from traitpipe.collection.manifest import ManifestError
from traitpipe.collection.shards import shard_names
from traitpipe.config import ConfigError, canonical_json, collection_file, validate_config
from traitpipe.jobs.ingest import load_manifest
from traitpipe.store.atomic import atomic_path
from traitpipe.store.tables import table_path

try:
    CFG = validate_config(config)
    MANIFEST = load_manifest(CFG)
except (ConfigError, ManifestError) as error:
    sys.exit(f"traitpipe: {error}")

RESULTS = CFG["results"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
RUN_CONFIG = f"{RESULTS}/run/config.json"
SHARDS = shard_names(MANIFEST["species"], CFG["shard_size"])
# jobs run with the interpreter that runs Snakemake (the project's environment)
TRAITPIPE = f"{sys.executable} -m traitpipe"

wildcard_constraints:
    shard=r"\d+",


def table_file(table, shard, partition=None):
    """Path of one table file (see traitpipe.store.tables.table_path)."""
    return str(table_path(RESULTS, table, shard, partition))


def ingest_outputs():
    """The images and failures tables of every shard."""
    return [table_file("images", s) for s in SHARDS] + [table_file("failures", s, "ingest") for s in SHARDS]


localrules:
    run_config,


# The validated config with its defaults, which every job reads. A changed config
# changes this rule's params, which reruns it and everything downstream.
rule run_config:
    output:
        RUN_CONFIG,
    params:
        text=canonical_json(CFG),
    run:
        with atomic_path(output[0]) as tmp:
            Path(tmp).write_text(params.text + "\n")
