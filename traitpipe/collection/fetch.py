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
  (up to ``max_wait``; no request goes to that host meanwhile) or ``backoff`` seconds doubled at each try;
- nothing but http(s) is opened: urllib's redirect handler refuses a redirect to ``file:`` (or any scheme but
  http, https and ftp), and the opener has no handler for ftp, files or data.

Images are kept as the server sent them: no resizing, no re-encoding (img2dataset's
``disable_all_reencoding``); ingest then decodes and checks them like any other image.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
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
from traitpipe.collection.images import read_bytes
from traitpipe.store.atomic import atomic_path

#: Bytes read at a time from a response.
CHUNK = 1 << 16
#: The most bytes of an error answer's body kept (the body of a 404 page is not wanted).
ERROR_BODY = 1 << 16
#: The answers tried again.
RETRIED = (429, 500, 502, 503, 504)
#: Images per row group of a batch's file: a reader reads one row group for one image.
ROW_GROUP = 16
#: The part size a parts folder was cut with (schema metadata of its URL list).
PART_SIZE = b"traitpipe.part_size"
#: img2dataset's X-Robots-Tag directives that forbid a download (its own default).
DISALLOWED = ("noai", "noimageai", "noindex", "noimageindex")


class FetchError(OSError):
    """A download refused or cut short; ``str(error)`` is the reason."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Policy:
    """How to be polite to the servers: ``collection.fetch``'s keys of the same names (config/README.md; its
    ``timeout`` img2dataset hands to each request)."""

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
        return cls(retries=fetch["retries"], backoff=fetch["backoff"],
                   max_wait=fetch["max_wait"], max_bytes=fetch["max_bytes"], per_host=fetch["per_host"],
                   hosts=None if hosts is None else tuple(h.lower() for h in hosts))


class HostSlots:
    """At most ``per_host`` holders at once per host, across threads; a host that asked to wait (Retry-After)
    gets no request before that time, from any thread."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self._lock = threading.Lock()
        self._slots: dict[tuple, threading.BoundedSemaphore] = {}
        self._not_before: dict[tuple, float] = {}

    @contextlib.contextmanager
    def __call__(self, host: tuple):
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self.per_host))
        with slot:
            wait = self._not_before.get(host, 0.0) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield

    def hold_off(self, host: tuple, seconds: float) -> None:
        """No request to ``host`` for ``seconds`` from now."""
        with self._lock:
            self._not_before[host] = max(self._not_before.get(host, 0.0), time.monotonic() + seconds)


def server(url: str) -> tuple[str, int]:
    """The server a URL names, as its host slots are keyed: host name and port (the scheme's by default).

    Examples
    --------
    >>> server("https://Images.Example.org/a.jpg"), server("http://user@127.0.0.1:8000/a.png")
    (('images.example.org', 443), ('127.0.0.1', 8000))
    """
    parts = urllib.parse.urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


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
        host = server(req.full_url)  # the server's, behind a proxy too
        if self.policy.hosts is not None and host[0] not in self.policy.hosts:
            raise FetchError(f"host {host[0]} is not in collection.fetch.hosts")
        with self.slots(host):
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
    >>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), retry_after("Wed, 21 Oct 2015 07:28:00 -0000")  # past
    (0.0, 0.0)
    """
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class _Retry(urllib.request.BaseHandler):
    """Tries a request again after a 429 or 5xx answer, waiting as its Retry-After asks (every request to that
    host waits) or backing off (at most ``max_wait``)."""

    def __init__(self, policy: Policy, slots: HostSlots):
        self.policy, self.slots = policy, slots

    def _again(self, req, fp, code, msg, headers):
        tries = getattr(req, "traitpipe_tries", 0)
        fp.close()
        if tries >= self.policy.retries:
            raise FetchError(f"HTTP Error {code}: {msg} (tried {tries + 1} times; collection.fetch.retries)")
        asked = retry_after(headers.get("Retry-After"))
        if asked is not None and asked > self.policy.max_wait:
            raise FetchError(f"HTTP Error {code}: {msg}; the server asks to wait {asked:.0f} s (Retry-After), "
                             f"longer than collection.fetch.max_wait {self.policy.max_wait:g} s")
        if asked is not None:
            self.slots.hold_off(server(req.full_url), asked)
        time.sleep(asked if asked is not None else min(self.policy.max_wait, self.policy.backoff * 2 ** tries))
        # a new request, as urllib's redirects make one: a proxy rewrites the one it sent
        again = urllib.request.Request(req.full_url, headers=dict(req.headers), method=req.get_method(),
                                       origin_req_host=req.origin_req_host)
        again.traitpipe_tries = tries + 1
        return self.parent.open(again, timeout=req.timeout)

    http_error_429 = http_error_500 = http_error_502 = http_error_503 = http_error_504 = _again


def opener(policy: Policy) -> urllib.request.OpenerDirector:
    """urllib's opener for fetching: the handlers of :mod:`traitpipe.collection.fetch` and the proxies of the
    environment (``https_proxy``, ``no_proxy``), http(s) only (no file, ftp or data handler: any other scheme is
    an "unknown url type")."""
    slots = HostSlots(policy.per_host)
    director = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), _HTTP(policy, slots), _HTTPS(policy, slots),
                    urllib.request.HTTPRedirectHandler(),
                    _Retry(policy, slots), urllib.request.HTTPErrorProcessor(), urllib.request.HTTPDefaultErrorHandler(),
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


def quoted(url: str) -> str:
    """A URL as a request line may carry it: spaces and other characters outside URLs percent-encoded (museum
    exports hold such URLs), what is encoded already left alone.

    Examples
    --------
    >>> quoted("http://h/Herbarium Sheets/ÅB 12.jpg?size=full")
    'http://h/Herbarium%20Sheets/%C3%85B%2012.jpg?size=full'
    """
    return urllib.parse.quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def download_parts(urls: list[str], parts: Path, fetch: dict, *, progress: bool = True) -> dict[str, str]:
    """Download URLs with img2dataset into its parts under ``parts``, those parts done before kept.

    Parameters
    ----------
    urls : list of str
        Distinct http(s) URLs.
    parts : Path
        img2dataset's output folder (created). Parts of another URL list or part size are removed first.
    fetch : dict
        ``collection.fetch`` of a validated config.
    progress : bool

    Returns
    -------
    dict of str to str
        URL -> the cell of its image in a part (``<part>.parquet#jpg/<row>``), or ``"error:<reason>"``; a URL
        img2dataset wrote no row for is absent.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which asks PyPI
    from img2dataset.downloader import Downloader
    from img2dataset.reader import Reader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import ParquetSampleWriter
    from tqdm import tqdm

    parts.mkdir(parents=True, exist_ok=True)
    listed, key = parts / "urls.parquet", str(fetch["part_size"]).encode()
    requested = [quoted(url) for url in urls]
    if not (listed.is_file() and pq.read_schema(listed).metadata.get(PART_SIZE) == key
            and pq.read_table(listed)["url"].to_pylist() == requested):
        for stale in parts.iterdir():  # another list or part size: its parts hold other URLs
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        with atomic_path(listed) as tmp:
            pq.write_table(pa.table({"url": pa.array(requested, pa.string())}).replace_schema_metadata(
                {PART_SIZE: key}), tmp)
    done = {int(p.name.split("_")[0]) for p in parts.glob("*_stats.json")}
    reader = Reader(url_list=str(listed), input_format="parquet", url_col="url", caption_col=None,
                    verify_hash_col=None, verify_hash_type=None, save_additional_columns=None,
                    number_sample_per_shard=fetch["part_size"], done_shards=done, tmp_path=str(parts / "_tmp"))
    (parts / "_tmp").mkdir(exist_ok=True)
    downloader = Downloader(
        sample_writer_class=ParquetSampleWriter, thread_count=fetch["threads"], save_caption=False,
        resizer=Resizer(image_size=0, resize_mode="no", resize_only_if_bigger=False, disable_all_reencoding=True),
        extract_exif=False, output_folder=str(parts), column_list=reader.column_list, timeout=fetch["timeout"],
        number_sample_per_shard=fetch["part_size"], oom_shard_count=5, compute_hash=None, verify_hash_type=None,
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
    original = dict(zip(requested, urls))
    found = {}
    for file in sorted(parts.glob("[0-9]*.parquet")):
        table = pq.read_table(file, columns=["url", "status", "error_message"])
        for row, (url, status, error) in enumerate(zip(*(table[c].to_pylist() for c in table.column_names))):
            found[original[url]] = f"{file}#jpg/{row}" if status == "success" else f"error:{error}"
    return found


def fetched_before(folder: str | Path, urls: list[str]) -> dict[str, str]:
    """The cells of the URLs that a batch file already in ``folder`` holds the image of (another batch, fetched
    when the shards were cut otherwise): fetched once, read from there."""
    wanted, found = set(urls), {}
    for file in sorted(Path(folder).glob("*.parquet")):
        try:
            table = pq.read_table(file, columns=["url", ERROR_COLUMN])
        except (OSError, pa.ArrowException, KeyError):  # not a batch file
            continue
        for row, (url, error) in enumerate(zip(table["url"].to_pylist(), table[ERROR_COLUMN].to_pylist())):
            if url in wanted and error is None:
                found.setdefault(url, f"{file}#{IMAGE_COLUMN}/{row}")
    return found


def fetch_batch(urls: list[str], media: str | Path, fetch: dict, *, progress: bool = True) -> dict:
    """Fetch one batch of URLs into its Parquet file ``media``, written whole or not at all.

    URLs another batch file of the folder holds are copied from there; the others are downloaded
    (:func:`download_parts`). The file is written a row group at a time, so a batch never sits in memory whole.

    Parameters
    ----------
    urls : list of str
        The batch's sorted, distinct URLs (:func:`traitpipe.collection.urls.fetch_batches`): row ``k`` of the
        file holds ``urls[k]``.
    media : str or Path
        The batch's file (:func:`traitpipe.collection.urls.batch_file`).
    fetch : dict
        ``collection.fetch`` of a validated config.
    progress : bool

    Returns
    -------
    dict
        ``urls``, ``fetched`` (downloaded now), ``copied`` (from another batch) and ``failed`` counts.
    """
    media, parts = Path(media), parts_folder(media)
    copied = fetched_before(media.parent, urls)
    found = {**download_parts([u for u in urls if u not in copied], parts, fetch, progress=progress), **copied}
    schema = pa.schema([("url", pa.string()), (IMAGE_COLUMN, pa.binary()), ("sha256", pa.string()),
                        (ERROR_COLUMN, pa.string())])
    failed = 0
    with atomic_path(media) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(urls), ROW_GROUP):
            chunk = urls[start:start + ROW_GROUP]
            where = [found.get(url, "error:not downloaded (img2dataset wrote no row for it)") for url in chunk]
            images = [None if w.startswith("error:") else read_bytes(w) for w in where]
            failed += images.count(None)
            writer.write_table(pa.table({
                "url": chunk, IMAGE_COLUMN: images,
                "sha256": [None if image is None else hashlib.sha256(image).hexdigest() for image in images],
                ERROR_COLUMN: [w.removeprefix("error:") if image is None else None for w, image in zip(where, images)]},
                schema=schema))
    shutil.rmtree(parts, ignore_errors=True)
    return {"urls": len(urls), "fetched": len(urls) - len(copied) - failed, "copied": len(copied), "failed": failed}


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
        ``batches``, ``already`` (batches fetched before), and of this call's batches ``urls``, ``fetched``,
        ``copied`` (from other batches) and ``failed``.
    """
    folder = media_folder(config)
    batches, cells = fetch_batches(shard_rows, folder)
    counts = {"batches": len(batches), "already": 0, "urls": 0, "fetched": 0, "copied": 0, "failed": 0}
    for k, (name, urls) in enumerate(batches.items(), 1):
        media = batch_file(folder, name)
        if media.is_file():
            counts["already"] += 1
            shutil.rmtree(parts_folder(media), ignore_errors=True)  # a fetch killed after writing the file
            continue
        if progress:
            print(f"fetch: batch {k}/{len(batches)} ({len(urls)} URLs) -> {media}", file=sys.stderr)
        done = fetch_batch(urls, media, config["collection"]["fetch"], progress=progress)
        counts.update({key: counts[key] + done[key] for key in ("urls", "fetched", "copied", "failed")})
    return {shard: fetched_files(rows, cells) for shard, rows in shard_rows.items()}, counts


def fetch_summary(counts: dict, folder: str | Path) -> str:
    """What :func:`fetch_collection` did, in words.

    Examples
    --------
    >>> fetch_summary({"fetched": 5, "copied": 0, "failed": 1, "already": 1, "batches": 3}, "results/media")
    '5 fetched now, 0 copied from other batches, 1 failed, 1 of 3 batches fetched before (in results/media)'
    """
    return (f"{counts['fetched']} fetched now, {counts['copied']} copied from other batches, {counts['failed']} "
            f"failed, {counts['already']} of {counts['batches']} batches fetched before (in {folder})")
