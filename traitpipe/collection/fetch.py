"""Download media named by URL with img2dataset, politely, into one Parquet file per batch of URLs.

img2dataset, the field's bulk image downloader, cuts the URL list into parts, downloads each part with a pool
of threads and writes it as Parquet with each image's sha256 and any error; a part whose stats file exists is
done, so a fetch that was killed resumes with the parts it had not finished. Its parts run here, in the
calling process, one after another: img2dataset's own process pool starts fresh interpreters, which the opener
below would not reach. On a cluster the workflow runs one fetch job per shard instead.

Every request goes through :func:`opener`, urllib's opener (what img2dataset calls) built from these handlers:

- a host not in ``collection.fetch.hosts`` (when given) is refused;
- at most ``per_host`` requests are in flight to one host, from connecting to the body's last byte;
- a body larger than ``max_bytes`` is refused by its Content-Length before it is read, and cut off while it is
  read when the server sends none; a body shorter than its Content-Length is a failure, not an image;
- a 429 or 5xx answer (500, 502, 503, 504) is tried again ``retries`` times, after the wait its Retry-After asks
  (up to ``max_wait``) or ``backoff`` seconds doubled at each try;
- a redirect to a scheme other than http(s) is refused (urllib's redirect handler), and no handler reads files.

Images are kept as the server sent them: no resizing, no re-encoding (img2dataset's
``disable_all_reencoding``); ingest then decodes and checks them like any other image.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import os
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
import urllib.response
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traitpipe.collection.urls import (ERROR_COLUMN, IMAGE_COLUMN, batch_file, fetch_batches, fetched_files,
                                      media_folder)
from traitpipe.store.atomic import atomic_path

#: Bytes read at a time from a response.
CHUNK = 1 << 16
#: The most bytes of an error answer's body kept (the body of a 404 page is not wanted).
ERROR_BODY = 1 << 16
#: The answers tried again.
RETRIED = (429, 500, 502, 503, 504)
#: Images per row group of a batch's file: a reader reads one row group for one image.
ROW_GROUP = 16
#: img2dataset's X-Robots-Tag directives that forbid a download (its own default).
DISALLOWED = ("noai", "noimageai", "noindex", "noimageindex")


class FetchError(OSError):
    """A download refused or cut short; ``str(error)`` is the reason."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Policy:
    """How to be polite to the servers: ``collection.fetch``'s keys of the same names (config/README.md)."""

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 2.0
    max_wait: float = 120.0
    max_bytes: int = 100_000_000
    per_host: int = 4
    hosts: tuple[str, ...] | None = None

    @classmethod
    def of(cls, fetch: dict) -> Policy:
        """The policy of a validated config's ``collection.fetch``."""
        hosts = fetch["hosts"]
        return cls(timeout=fetch["timeout"], retries=fetch["retries"], backoff=fetch["backoff"],
                   max_wait=fetch["max_wait"], max_bytes=fetch["max_bytes"], per_host=fetch["per_host"],
                   hosts=None if hosts is None else tuple(h.lower() for h in hosts))


class HostSlots:
    """At most ``per_host`` holders at once per host, across threads."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    @contextlib.contextmanager
    def __call__(self, host: str):
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self.per_host))
        with slot:
            yield


def read_body(response, max_bytes: int) -> bytes:
    """A response's whole body, refused when larger than ``max_bytes`` (by Content-Length before reading, by
    count while reading) or shorter than its Content-Length.

    Raises
    ------
    FetchError
        Too large or truncated.
    """
    length = (response.headers.get("Content-Length") or "").strip()
    declared = int(length) if length.isdigit() else None
    if declared is not None and declared > max_bytes:
        raise FetchError(f"too large: Content-Length {declared} bytes > collection.fetch.max_bytes {max_bytes}")
    body = bytearray()
    while chunk := response.read(CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"too large: more than collection.fetch.max_bytes {max_bytes} bytes")
    if declared is not None and len(body) < declared:
        raise FetchError(f"truncated: {len(body)} of the {declared} bytes its Content-Length announced")
    return bytes(body)


class _Bounded:
    """urllib's HTTP(S) handler made polite: the host allowed, a slot of its host held while the whole answer is
    read, and that answer handed on from memory (urllib's own response type)."""

    def __init__(self, policy: Policy, slots: HostSlots, **kwargs):
        super().__init__(**kwargs)
        self.policy, self.slots = policy, slots

    def do_open(self, http_class, req, **kwargs):
        host = (urllib.parse.urlsplit(req.full_url).hostname or "").lower()
        if self.policy.hosts is not None and host not in self.policy.hosts:
            raise FetchError(f"host {host} is not in collection.fetch.hosts")
        with self.slots(urllib.parse.urlsplit(req.full_url).netloc.lower()):  # the server's, behind a proxy too
            response = super().do_open(http_class, req, **kwargs)
            try:
                ok = 200 <= response.status < 300
                body = read_body(response, self.policy.max_bytes) if ok else response.read(ERROR_BODY)
            finally:
                response.close()
        answer = urllib.response.addinfourl(io.BytesIO(body), response.headers, req.full_url, response.status)
        answer.msg = response.reason
        return answer


class _HTTP(_Bounded, urllib.request.HTTPHandler):
    pass


class _HTTPS(_Bounded, urllib.request.HTTPSHandler):
    pass


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number of seconds or an HTTP date); None when absent or
    unreadable.

    Examples
    --------
    >>> retry_after("3"), retry_after(None), retry_after("soon")
    (3.0, None, None)
    >>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT")  # a date past: no wait
    0.0
    """
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class _Retry(urllib.request.BaseHandler):
    """Tries a request again after a 429 or 5xx answer, waiting as its Retry-After asks or backing off."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def _again(self, req, fp, code, msg, headers):
        tries = getattr(req, "traitpipe_tries", 0)
        fp.close()
        if tries >= self.policy.retries:
            raise FetchError(f"HTTP Error {code}: {msg} (tried {tries + 1} times; collection.fetch.retries)")
        asked = retry_after(headers.get("Retry-After"))
        if asked is not None and asked > self.policy.max_wait:
            raise FetchError(f"HTTP Error {code}: {msg}; the server asks to wait {asked:.0f} s (Retry-After), "
                             f"longer than collection.fetch.max_wait {self.policy.max_wait:g} s")
        time.sleep(asked if asked is not None else self.policy.backoff * 2 ** tries)
        req.traitpipe_tries = tries + 1
        return self.parent.open(req, timeout=req.timeout)

    http_error_429 = http_error_500 = http_error_502 = http_error_503 = http_error_504 = _again


def opener(policy: Policy) -> urllib.request.OpenerDirector:
    """urllib's opener for fetching: the handlers of :mod:`traitpipe.collection.fetch` and the proxies of the
    environment (``https_proxy``, ``no_proxy``), http(s) only (no file, ftp or data handler: any other scheme is
    an "unknown url type")."""
    slots = HostSlots(policy.per_host)
    director = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), _HTTP(policy, slots), _HTTPS(policy, slots),
                    urllib.request.HTTPRedirectHandler(),
                    _Retry(policy), urllib.request.HTTPErrorProcessor(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.UnknownHandler()):
        director.add_handler(handler)
    return director


@contextlib.contextmanager
def installed(director: urllib.request.OpenerDirector):
    """Make ``director`` the opener of ``urllib.request.urlopen`` (img2dataset's) for the block."""
    previous = getattr(urllib.request, "_opener", None)
    urllib.request.install_opener(director)
    try:
        yield
    finally:
        urllib.request.install_opener(previous)


def parts_folder(media: str | Path) -> Path:
    """``<media>.parts``: img2dataset's parts of a batch while it is fetched (kept by a killed fetch)."""
    return Path(f"{media}.parts")


def download_parts(urls: list[str], parts: Path, fetch: dict, *, progress: bool = True) -> pd.DataFrame:
    """Download every URL with img2dataset into its parts under ``parts``, those already done kept.

    Parameters
    ----------
    urls : list of str
        Distinct http(s) URLs.
    parts : Path
        img2dataset's output folder (created; a killed fetch's parts resume).
    fetch : dict
        ``collection.fetch`` of a validated config.
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per URL, in ``urls`` order: ``url`` (str), ``image`` (bytes, None where the download failed),
        ``sha256`` (str or None) and ``fetch_error`` (str, None where it succeeded).
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which asks PyPI
    from img2dataset.downloader import Downloader
    from img2dataset.reader import Reader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import ParquetSampleWriter
    from tqdm import tqdm

    parts.mkdir(parents=True, exist_ok=True)
    listed = parts / "urls.parquet"
    if not listed.is_file() or pq.read_table(listed)["url"].to_pylist() != list(urls):
        for stale in parts.iterdir():  # another list: its parts are not this one's
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        with atomic_path(listed) as tmp:
            pq.write_table(pa.table({"url": pa.array(urls, pa.string())}), tmp)
    done = {int(p.name.split("_")[0]) for p in parts.glob("*_stats.json")}
    reader = Reader(str(listed), "parquet", "url", None, None, None, None, fetch["part_size"], done,
                    str(parts / "_tmp"), 0)
    (parts / "_tmp").mkdir(exist_ok=True)
    downloader = Downloader(
        sample_writer_class=ParquetSampleWriter, thread_count=fetch["threads"], save_caption=False,
        resizer=Resizer(image_size=0, resize_mode="no", resize_only_if_bigger=False, disable_all_reencoding=True),
        extract_exif=False, output_folder=str(parts), column_list=reader.column_list, timeout=fetch["timeout"],
        number_sample_per_shard=fetch["part_size"], oom_shard_count=5, compute_hash="sha256", verify_hash_type=None,
        encode_format="jpg", retries=0, user_agent_token=fetch["user_agent"],
        disallowed_header_directives=set(DISALLOWED))
    total = -(-len(urls) // fetch["part_size"])
    with installed(opener(Policy.of(fetch))), contextlib.redirect_stdout(sys.stderr):
        bar = tqdm(total=total, initial=len(done), desc="fetch", unit="part", disable=not progress, file=sys.stderr)
        for part in reader:
            ok, _ = downloader(part)
            if not ok and not downloader(part)[0]:  # once more, as img2dataset's own distributor does
                raise RuntimeError(f"img2dataset could not write part {part[0]} of {parts}")
            bar.update()
        bar.close()
    fetched = pd.concat([pd.read_parquet(file, columns=["url", "jpg", "sha256", "error_message"])
                         for file in sorted(parts.glob("[0-9]*.parquet"))], ignore_index=True)
    fetched = fetched.drop_duplicates("url").set_index("url").reindex(urls)
    return pd.DataFrame({"url": urls, IMAGE_COLUMN: fetched["jpg"].to_list(), "sha256": fetched["sha256"].to_list(),
                         ERROR_COLUMN: [None if image is not None else (error or "not downloaded")
                                        for image, error in zip(fetched["jpg"], fetched["error_message"])]})


def fetch_batch(urls: list[str], media: str | Path, fetch: dict, *, progress: bool = True) -> dict:
    """Fetch one batch of URLs into its Parquet file ``media``, written whole or not at all.

    Parameters
    ----------
    urls : list of str
        The batch's sorted, distinct URLs (:func:`traitpipe.collection.urls.fetched_rows`): row ``k`` of the
        file holds ``urls[k]``.
    media : str or Path
        The batch's file (:func:`traitpipe.collection.urls.batch_file`).
    fetch : dict
        ``collection.fetch`` of a validated config.
    progress : bool

    Returns
    -------
    dict
        ``urls``, ``fetched`` and ``failed`` counts.
    """
    parts = parts_folder(media)
    table = download_parts(list(urls), parts, fetch, progress=progress)
    schema = pa.schema([("url", pa.string()), (IMAGE_COLUMN, pa.binary()), ("sha256", pa.string()),
                        (ERROR_COLUMN, pa.string())])
    with atomic_path(media) as tmp:
        pq.write_table(pa.Table.from_pandas(table, schema=schema, preserve_index=False), tmp,
                       row_group_size=ROW_GROUP)
    shutil.rmtree(parts)
    failed = int(table[ERROR_COLUMN].notna().sum())
    return {"urls": len(table), "fetched": len(table) - failed, "failed": failed}


def fetch_collection(config: dict, shard_rows: dict[str, pd.DataFrame], *,
                     progress: bool = True) -> tuple[dict[str, pd.DataFrame], dict]:
    """Fetch each batch of a collection's URLs whose file is not there yet (``traitpipe fetch`` and
    ``traitpipe validate``; the workflow runs :func:`fetch_batch` as one job per batch).

    Parameters
    ----------
    config : dict
        Validated config (``collection.fetch``, ``results``).
    shard_rows : dict of str to pandas.DataFrame
        From :func:`traitpipe.collection.shards.shard_rows`.
    progress : bool

    Returns
    -------
    rows : dict of str to pandas.DataFrame
        ``shard_rows``, each URL row's ``file`` its fetched cell.
    counts : dict
        ``batches``, ``already`` (batches fetched before), ``urls``, ``fetched`` and ``failed`` (of this call).
    """
    folder = media_folder(config)
    batches, cells = fetch_batches(shard_rows, folder)
    counts = {"batches": len(batches), "already": 0, "urls": 0, "fetched": 0, "failed": 0}
    for k, (name, urls) in enumerate(batches.items(), 1):
        media = batch_file(folder, name)
        if media.is_file():
            counts["already"] += 1
            continue
        if progress:
            print(f"fetch: batch {k}/{len(batches)} ({len(urls)} URLs) -> {media}", file=sys.stderr)
        done = fetch_batch(urls, media, config["collection"]["fetch"], progress=progress)
        counts.update({key: counts[key] + done[key] for key in ("urls", "fetched", "failed")})
    return {shard: fetched_files(rows, cells) for shard, rows in shard_rows.items()}, counts
