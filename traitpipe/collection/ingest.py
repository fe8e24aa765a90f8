"""Ingest: manifest rows -> the usable images' rows and the failures' rows (no model; images read, not kept).

The workflow's ingest step runs it on one shard, ``traitpipe validate`` on a whole collection. Every
image is read once through the shared reader (decode, EXIF orientation, RGB 8-bit, size limit); its
content hash is its ``image_id``. Unusable images and duplicates become ``failures`` rows; the others
are ordered by (species, image_id). A shard reads every row of the species it holds (planned from the
manifest when the workflow is parsed, see ``traitpipe.collection.shards.shard_rows``),
so a duplicate is found among the rows of the same species and shard.
"""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from tqdm import tqdm

from traitpipe.collection.images import ImageError, decode, image_id, read_bytes, read_order
from traitpipe.collection.manifest import outside_root
from traitpipe.collection.shards import in_piece
from traitpipe.collection.urls import fetched_cell, media_folder, not_a_path


def _probe(file: str, max_pixels: int, root: str | None, media: str) -> dict:
    """``image_id``, ``width``, ``height`` and failure ``reason`` (None when usable) of one image file; a URL
    (not fetched) is not read; a file outside both ``root`` (None: any place is allowed) and the folder of
    fetched ``media`` is refused unopened."""
    reason = not_a_path(file)
    if reason is None and root is not None and outside_root(file, root) and outside_root(file, media):
        reason = (f"outside the collection root {root}: refused, never opened (set collection.allow_outside_root: "
                  "true to read files elsewhere)")
    if reason is not None:
        return {"image_id": None, "width": 0, "height": 0, "reason": reason}
    try:
        data = read_bytes(file)
        identity = image_id(data)
        height, width = decode(data, max_pixels=max_pixels).shape[:2]
        return {"image_id": identity, "width": width, "height": height, "reason": None}
    except ImageError as error:
        return {"image_id": None, "width": 0, "height": 0, "reason": str(error)}


def ingest(config: dict, rows: pd.DataFrame, *, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the images of some shards' rows and keep each shard's piece.

    Parameters
    ----------
    config : dict
        Validated run config (``collection.max_pixels``, ``collection.allow_outside_root``, ``collection.fetch``,
        ``ingest.threads``).
    rows : pandas.DataFrame
        From ``traitpipe.collection.shards.shard_rows``: one shard's rows, or several shards'
        concatenated (a row of a species split over shards appears once per shard; its file is
        read once).
    progress : bool
        Show a tqdm bar on stderr.

    Returns
    -------
    images : pandas.DataFrame
        Usable images: the ``images`` table columns plus the rank columns, by (shard, species, image_id).
    failures : pandas.DataFrame
        The ``failures`` table columns, one row per unusable or duplicate image, by manifest row.
    """
    collection = config["collection"]
    max_pixels, root = collection["max_pixels"], None if collection["allow_outside_root"] else collection["root"]
    media = str(media_folder(config))
    files = rows.drop_duplicates("row")
    files = files.iloc[read_order(files["file"].tolist())]  # images stored in Parquet: each row group read once
    with ThreadPoolExecutor(config["ingest"]["threads"]) as pool:
        probes = list(tqdm(pool.map(lambda f: _probe(f, max_pixels, root, media), files["file"]), total=len(files),
                           desc="ingest", unit="img", disable=not progress, file=sys.stderr))
    probed = pd.DataFrame(probes, index=files["row"])
    table = rows.join(probed, on="row")
    first = table.dropna(subset=["image_id"]).sort_values("row").drop_duplicates("image_id")
    first_row = dict(zip(first["image_id"], first["row"]))
    duplicate = table["image_id"].notna() & (table["row"] != table["image_id"].map(first_row))
    table.loc[duplicate, "reason"] = [f"duplicate of manifest row {first_row[i]} (same content, image_id {i})"
                                      for i in table.loc[duplicate, "image_id"]]
    # failed rows keep their slot in the planned shards: sort them after the usable ones
    path_key = ["~" + hashlib.sha256(p.encode()).hexdigest() for p in table["path"]]
    key = table["image_id"].where(table["reason"].isna(), pd.Series(path_key, index=table.index))
    table = table[in_piece(table, key)]
    failed = table["reason"].notna()
    table = table.assign(fetched=[fetched_cell(p, f, media) for p, f in zip(table["path"], table["file"])])
    return table[~failed].sort_values(["shard", "species", "image_id"]), table[failed].sort_values("row")
