"""``traitpipe validate``: ingest a whole collection without running any model and say what a run of it would
work with (the same :func:`traitpipe.collection.ingest.ingest` as the workflow's ingest step; the command
writes the tables).

A manifest can be given alone (its columns named as the config's defaults: ``path``, ``species``), or a config
file, whose collection and preflight checks (:mod:`traitpipe.preflight`) are then those of a run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from traitpipe.collection.ingest import ingest
from traitpipe.collection.manifest import ManifestError, read_table
from traitpipe.collection.shards import shard_rows
from traitpipe.collection.urls import is_url
from traitpipe.config import load_config, validate_config
from traitpipe.plan import shard_size
from traitpipe.collection.references import find_references

#: Config files; anything else is read as a manifest.
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
#: Optional manifest columns a manifest given alone uses when it has a column of that very name.
OPTIONAL_COLUMNS = ("specimen", "mask", "parts_truth", "trait_truth")
#: SST's fewest usable images per species: the labelled reference and one query.
SST_MIN_IMAGES = 2


def collection_config(source: str | Path, root: str | Path | None = None) -> dict:
    """The validated config of a config file, or of a manifest alone (root: ``root``, else the manifest's
    folder; its columns named ``path``, ``species`` and, where present, :data:`OPTIONAL_COLUMNS`; every other
    key at its default). Raises ``ConfigError`` for a bad config, ``ManifestError`` for an unreadable
    manifest."""
    source = Path(source)
    if source.suffix.lower() in CONFIG_SUFFIXES:
        config = load_config(source)
        if root is not None:
            config["collection"]["root"] = str(root)
        return config
    if not source.exists():
        raise ManifestError(f"manifest not found: {source}")
    root = root if root is not None else source.parent
    # the header only: a Parquet manifest may hold the images themselves
    present = (pq.read_schema(source).names if source.suffix.lower() in (".parquet", ".pq")
               else read_table(source, root).columns)
    columns = {name: name for name in OPTIONAL_COLUMNS if name in present}
    return validate_config({"collection": {"root": str(root),
                                           "manifest": str(source.resolve()), "columns": columns}})


def reason_kind(reason: str) -> str:
    """A failure reason without its particulars (file names, sizes), to count failures by kind.

    Examples
    --------
    >>> reason_kind("missing file: images/a.png")
    'missing file'
    >>> reason_kind("duplicate of manifest row 3 (same content, image_id 0a1b)")
    'duplicate of manifest row'
    """
    head = reason.split(":", 1)[0].split("(", 1)[0].strip()
    return " ".join(word for word in head.split() if not any(c.isdigit() for c in word))


def summary(images: pd.DataFrame, failures: pd.DataFrame, species: list[str], referenced: set[str]) -> dict:
    """What a run would work with: usable images per species, failures by kind, species without a reference
    mask, species with too few usable images for SST."""
    usable = images.groupby("species").size().reindex(species, fill_value=0)
    return {"usable_images": int(len(images)), "failures": int(len(failures)),
            "usable_per_species": {name: int(n) for name, n in usable.items()},
            "failures_by_reason": {kind: int(n) for kind, n in
                                   failures["reason"].map(reason_kind).value_counts().sort_index().items()},
            "without_reference_mask": sorted(set(species) - referenced),
            "too_few_for_sst": sorted(name for name, n in usable.items() if n < SST_MIN_IMAGES)}


def validate_collection(config: dict, manifest: pd.DataFrame, *,
                        progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Ingest every image of a collection, its URLs fetched first with ``collection.fetch.enabled``.

    Parameters
    ----------
    config : dict
        Validated config.
    manifest : pandas.DataFrame
        Its manifest (:func:`traitpipe.collection.manifest.load_manifest`).
    progress : bool

    Returns
    -------
    images, failures : pandas.DataFrame
        The ``images`` and ``failures`` tables' rows (see :func:`traitpipe.collection.ingest.ingest`).
    summary : dict
        See :func:`summary`; and ``urls``, how many manifest rows name a URL, and ``fetch``, what was downloaded
        (:func:`traitpipe.collection.fetch.fetch_collection`; None without ``collection.fetch.enabled``).
    """
    rows = shard_rows(manifest, shard_size(config, manifest["species"]))
    fetched = None
    if config["collection"]["fetch"]["enabled"]:
        from traitpipe.collection.fetch import fetch_collection

        rows, fetched = fetch_collection(config, rows, progress=progress)
    images, failures = ingest(config, pd.concat(rows.values(), ignore_index=True), progress=progress)
    referenced = set(find_references(manifest, config["segment"]["masks"], config["collection"]["root"]))
    found = summary(images, failures, sorted(manifest["species"].unique()), referenced)
    return images, failures, {**found, "urls": int(manifest["path"].map(is_url).sum()), "fetch": fetched}
