"""Ingest: manifest -> ``images`` and ``failures`` tables, one file per shard.

Every image is read once through the shared reader (decode, EXIF orientation,
RGB 8-bit, size limit); its content hash is its ``image_id``. Unusable images
and duplicates become ``failures`` rows; the others are ordered by (species,
image_id) and cut into the shards planned from the manifest.
"""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from tqdm import tqdm

from traitpipe.collection.images import ImageError, decode, image_id, read_bytes
from traitpipe.collection.manifest import read_manifest
from traitpipe.collection.shards import assign_shards, shard_names
from traitpipe.jobs.common import job_arguments, start_job
from traitpipe.store.provenance import provenance
from traitpipe.store.tables import write_table


def _probe(file: str, max_pixels: int) -> tuple[str | None, int, int, str | None]:
    """(image_id, width, height, failure reason) of one image file."""
    try:
        data = read_bytes(file)
        identity = image_id(data)
        height, width = decode(data, max_pixels=max_pixels).shape[:2]
        return identity, width, height, None
    except ImageError as error:
        return None, 0, 0, str(error)


def ingest(config: dict, manifest: pd.DataFrame, *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every image of a manifest and assign shards.

    Parameters
    ----------
    config : dict
        Validated run config (``shard_size``, ``collection.max_pixels``, ``ingest.threads``).
    manifest : pandas.DataFrame
        From ``read_manifest``.
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    images : pandas.DataFrame
        Usable images: the ``images`` table columns plus the rank columns.
    failures : pandas.DataFrame
        The ``failures`` table columns, one row per unusable or duplicate image.
    """
    max_pixels = config["collection"]["max_pixels"]
    with ThreadPoolExecutor(config["ingest"]["threads"]) as pool:
        probes = list(tqdm(pool.map(lambda f: _probe(f, max_pixels), manifest["file"]), total=len(manifest),
                           desc="ingest", unit="img", disable=not progress, file=sys.stderr))
    table = manifest.assign(
        image_id=[p[0] for p in probes], width=[p[1] for p in probes], height=[p[2] for p in probes],
        reason=[p[3] for p in probes])
    first = table.dropna(subset=["image_id"]).sort_values("row").drop_duplicates("image_id")
    duplicate = table["image_id"].notna() & ~table.index.isin(first.index)
    first_row = dict(zip(first["image_id"], first["row"]))
    table.loc[duplicate, "reason"] = [f"duplicate of manifest row {first_row[i]} (same content, image_id {i})"
                                      for i in table.loc[duplicate, "image_id"]]
    # failed rows keep their slot in the planned shards: sort them after the usable ones
    path_key = ["~" + hashlib.sha256(p.encode()).hexdigest() for p in table["path"]]
    key = table["image_id"].where(table["reason"].isna(), pd.Series(path_key, index=table.index))
    table["shard"] = assign_shards(table["species"], key, config["shard_size"])
    labels = {name: i for i, name in enumerate(sorted(table["species"].unique()))}
    table["label"] = table["species"].map(labels).astype(np.int32)
    failed = table["reason"].notna()
    return table[~failed].sort_values(["shard", "species", "image_id"]), table[failed].sort_values("row")


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job ingest --config RUN_CONFIG --manifest FILE --shards S.. --images T.. --failures T..``.

    Writes the ``images`` and ``failures`` table of every shard, to the files given in shard order.
    """
    args = job_arguments("ingest", paths=("manifest",), lists=("shards", "images", "failures")).parse_args(argv)
    config = start_job(args)
    collection = config["collection"]
    manifest = read_manifest(args.manifest, collection["columns"], collection["root"])
    planned = shard_names(manifest["species"], config["shard_size"])
    if args.shards != planned or len(args.images) != len(planned) or len(args.failures) != len(planned):
        raise SystemExit(f"ingest: the rule hands over shards {args.shards} with {len(args.images)} images and "
                         f"{len(args.failures)} failures files; the manifest plans {planned}")
    images, failures = ingest(config, manifest)
    prov = provenance(config)
    ranks = list(collection["columns"]["ranks"])
    for shard, images_file, failures_file in zip(planned, args.images, args.failures):
        write_table(images[images["shard"] == shard], images_file, "images", prov, ranks)
        write_table(failures[failures["shard"] == shard], failures_file, "failures", prov)
    print(f"ingest: {len(images)} usable images, {len(failures)} failures, "
          f"{images['species'].nunique()} species", file=sys.stderr)
