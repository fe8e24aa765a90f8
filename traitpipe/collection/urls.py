"""Media named by URL: what a manifest row names when it is not a local file, and where its fetched copy lies.

Darwin Core archives from GBIF, iDigBio or a museum's IPT name their images by ``http(s)`` URLs. traitpipe reads
local files only; with ``collection.fetch.enabled`` the fetch step (:mod:`traitpipe.collection.fetch`) first
downloads them into Parquet files under the media folder, one per batch of URLs, and ingest reads each image
from its cell there, ``<media>/<batch>.parquet#image/<k>``. A batch holds the URLs of one shard (or of one
species split over shards), in sorted order, and is named by their digest: a rerun finds the same file.
"""

from __future__ import annotations

import collections
import hashlib
import re
from pathlib import Path

import pandas as pd

from traitpipe.collection.images import FETCH_ERROR

#: The schemes the fetch step downloads.
FETCHED_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: The column of a fetched batch's Parquet file holding each image (null where the fetch failed).
IMAGE_COLUMN = "image"
#: Its column saying why a URL was not fetched (null where it was).
ERROR_COLUMN = FETCH_ERROR


def scheme(path: str) -> str | None:
    """The scheme of a ``scheme://...`` location, lowercased; None for a path.

    Examples
    --------
    >>> scheme("https://api.gbif.org/a.jpg"), scheme("FILE:///etc/passwd"), scheme("media/a.jpg")
    ('https', 'file', None)
    """
    match = _SCHEME.match(str(path))
    return match[1].lower() if match else None


def is_url(path: str) -> bool:
    """Whether a manifest's path is an http(s) URL, which only the fetch step reads.

    Examples
    --------
    >>> is_url("http://127.0.0.1:8000/a.png"), is_url("file:///a.png"), is_url("c/a.png")
    (True, False, False)
    """
    return scheme(path) in FETCHED_SCHEMES


def not_a_path(path: str) -> str | None:
    """The failures row's reason for a location that is not a local file, None for a path.

    Examples
    --------
    >>> not_a_path("https://example.org/a.jpg")
    'a URL: traitpipe reads local files; set collection.fetch.enabled: true to download the media first'
    >>> not_a_path("file:///etc/passwd")  # doctest: +ELLIPSIS
    'a file:// URI, not a path: ...'
    >>> not_a_path("images/a.png") is None
    True
    """
    found = scheme(path)
    if found is None:
        return None
    if found in FETCHED_SCHEMES:
        return "a URL: traitpipe reads local files; set collection.fetch.enabled: true to download the media first"
    return (f"a {found}:// URI, not a path: traitpipe reads local files (write the path itself) and downloads "
            "http(s) URLs only")


def media_folder(config: dict) -> Path:
    """Where fetched media go: ``collection.fetch.folder``, else ``<results>/media``."""
    return Path(config["collection"]["fetch"]["folder"] or Path(config["results"]) / "media")


def batch_name(urls: list[str]) -> str:
    """A batch's name: the first 16 hex digits of the sha256 of its sorted, distinct URLs.

    Examples
    --------
    >>> batch_name(["http://h/b.png", "http://h/a.png"]) == batch_name(["http://h/a.png", "http://h/b.png"] * 2)
    True
    """
    return hashlib.sha256("\n".join(sorted(set(urls))).encode()).hexdigest()[:16]


def batch_file(folder: str | Path, name: str) -> Path:
    """``<folder>/<name>.parquet``: one batch's fetched media."""
    return Path(folder) / f"{name}.parquet"


def fetch_batches(shard_rows: dict[str, pd.DataFrame],
                  folder: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The batches of URLs the fetch step downloads, and where each URL's image will be: a shard's URLs are one
    batch, but those of a species split over several shards are a batch of their own, which those shards share
    (each shard's ingest reads every row of its species).

    Parameters
    ----------
    shard_rows : dict of str to pandas.DataFrame
        From :func:`traitpipe.collection.shards.shard_rows` (``path``: as the manifest writes it; ``species``).
    folder : str or Path
        The media folder (:func:`media_folder`).

    Returns
    -------
    batches : dict of str to list of str
        Batch name -> its sorted, distinct URLs.
    cells : dict of str to str
        URL -> ``<folder>/<batch>.parquet#image/<k>``, ``k`` its position in its batch.

    Examples
    --------
    >>> rows = {"00000": pd.DataFrame({"path": ["http://h/b.png", "a.png", "http://h/a.png"],
    ...                                "species": ["A a", "A a", "B b"]})}
    >>> batches, cells = fetch_batches(rows, "media")
    >>> list(batches.values()), cells["http://h/b.png"].split("#")[1]
    ([['http://h/a.png', 'http://h/b.png']], 'image/1')
    >>> split = {"00000": pd.DataFrame({"path": ["http://h/c.png", "http://h/x.png", "http://h/y.png"],
    ...                                 "species": ["C c", "X x", "X x"]}),
    ...          "00001": pd.DataFrame({"path": ["http://h/x.png", "http://h/y.png"], "species": ["X x", "X x"]})}
    >>> list(fetch_batches(split, "media")[0].values())  # X x, split over two shards, is fetched once
    [['http://h/c.png'], ['http://h/x.png', 'http://h/y.png']]
    """
    shards_of = collections.Counter(name for rows in shard_rows.values() for name in rows["species"].unique())
    batches, cells = {}, {}
    for rows in shard_rows.values():
        linked = rows["path"].map(is_url).to_numpy(bool)
        split = rows["species"].map(shards_of).to_numpy() > 1
        groups = [rows.loc[linked & ~split, "path"],
                  *(group["path"] for _, group in rows[linked & split].groupby("species"))]
        for urls in (sorted(set(paths)) for paths in groups):
            if urls:
                name = batch_name(urls)
                batches[name] = urls
                for k, url in enumerate(urls):
                    cells.setdefault(url, f"{batch_file(folder, name)}#{IMAGE_COLUMN}/{k}")
    return batches, cells


def fetched_files(rows: pd.DataFrame, cells: dict[str, str]) -> pd.DataFrame:
    """Manifest rows whose URLs' ``file`` is the cell of their fetched image (:func:`fetch_batches`).

    Examples
    --------
    >>> rows = pd.DataFrame({"path": ["http://h/a.png", "a.png"], "file": ["http://h/a.png", "c/a.png"]})
    >>> fetched_files(rows, {"http://h/a.png": "media/f.parquet#image/0"})["file"].tolist()
    ['media/f.parquet#image/0', 'c/a.png']
    """
    return rows.assign(file=[cells.get(path, file) for path, file in zip(rows["path"], rows["file"])])


def fetched_cell(path: str, file: str, folder: str | Path) -> str | None:
    """What the ``images`` table's ``fetched`` holds for a row: its cell relative to the media folder when its
    ``path`` is a URL fetched there, else None.

    Examples
    --------
    >>> fetched_cell("http://h/a.png", "results/media/f.parquet#image/0", "results/media")
    'f.parquet#image/0'
    >>> fetched_cell("c/a.png", "c/a.png", "results/media"), fetched_cell("http://h/a.png", "http://h/a.png", "m")
    (None, None)
    """
    return str(Path(file).relative_to(folder)) if is_url(path) and not is_url(file) else None
