"""Media named by URL (collection.fetch), against an HTTP server on 127.0.0.1 (tests/media_server.py): what a URL
is without fetching, and a fetch that keeps every good image, makes every bad URL its own failure, keeps to its
limits, resumes when killed and fetches nothing twice. No test here talks to another address."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from traitpipe.collection.fetch import fetch_batch, parts_folder
from traitpipe.config import validate_config

from conftest import write_config, write_dwca
from media_server import BAD, RETRIED, MediaServer

# a proxy of the environment must not see the test's requests
os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"


def fetch_settings(**overrides) -> dict:
    """``collection.fetch`` at its defaults (the schema's), short limits for the tests, then ``overrides``."""
    fetch = {"enabled": True, "timeout": 1, "retries": 2, "backoff": 0.1, "max_wait": 5, "max_bytes": 100_000,
             "part_size": 4, **overrides}
    return validate_config({"collection": {"root": ".", "manifest": "m.csv", "fetch": fetch}})["collection"]["fetch"]


def write_images(folder: Path, names) -> dict[str, bytes]:
    """A small PNG of its own content per name, in ``folder``; name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        pixels = np.random.default_rng(k).integers(0, 255, (24, 32, 3), np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return {name: (folder / name).read_bytes() for name in names}


def test_a_fetch_keeps_every_good_image_as_sent_and_says_why_each_bad_url_failed(tmp_path):
    images = write_images(tmp_path / "served", ["a.png", "b.png", "flaky.png", "busy.png", "slow.png",
                                                "truncated.png"])
    with MediaServer(tmp_path / "served") as server:
        good = [f"{server.url}/img/a.png", f"{server.url}/img/b.png", *(server.url + p for p in RETRIED)]
        urls = sorted(good + [server.url + p for p in BAD])
        media = tmp_path / "media" / "batch.parquet"
        counts = fetch_batch(urls, media, fetch_settings(), progress=False)
        requests, times = dict(server.requests), dict(server.times)
    table = pd.read_parquet(media)
    assert table["url"].tolist() == urls  # row k is urls[k]: the cell the manifest's rows point at
    kept = table.set_index("url")
    for url in good:  # the bytes as sent: no resize, no re-encoding
        name = url.rsplit("/", 1)[1]
        assert kept.loc[url, "image"] == images[name], url
        assert kept.loc[url, "sha256"] == hashlib.sha256(images[name]).hexdigest()
        assert kept.loc[url, "fetch_error"] is None
    for path, reason in BAD.items():
        if path == "/fake.jpg":  # downloaded: ingest finds it is no image
            assert kept.loc[server.url + path, "fetch_error"] is None
        else:
            assert kept.loc[server.url + path, "image"] is None
            assert reason in kept.loc[server.url + path, "fetch_error"], path
    assert counts == {"urls": len(urls), "fetched": len(good) + 1, "copied": 0, "failed": len(BAD) - 1}
    # the 500 and the 429 were tried once more, the 429 after the second its Retry-After asked; nothing else twice
    assert {path: n for path, n in requests.items() if n > 1} == {"/flaky.png": 2, "/busy.png": 2}
    assert times["/busy.png"][1] - times["/busy.png"][0] >= 0.95
    assert not parts_folder(media).exists()


def test_too_many_retry_answers_fail_with_the_count_and_a_long_retry_after_is_not_waited(tmp_path):
    write_images(tmp_path / "served", ["flaky.png", "busy.png"])
    errors = {}
    for name, settings in (("none", fetch_settings(retries=0)), ("short", fetch_settings(max_wait=0.5))):
        with MediaServer(tmp_path / "served") as server:  # each fetch meets the first answers
            fetch_batch([server.url + p for p in RETRIED], tmp_path / f"{name}.parquet", settings, progress=False)
        table = pd.read_parquet(tmp_path / f"{name}.parquet")
        errors[name] = dict(zip(table["url"].str.replace(server.url, ""), table["fetch_error"]))
    assert errors["none"]["/flaky.png"] == "HTTP Error 500: Internal Server Error (tried 1 times; collection.fetch.retries)"
    assert errors["short"] == {"/busy.png": "HTTP Error 429: Too Many Requests; the server asks to wait 1 s "
                                            "(Retry-After), longer than collection.fetch.max_wait 0.5 s",
                               "/flaky.png": None}  # retried after its backoff


def test_a_retry_after_holds_off_every_request_to_its_host(tmp_path):
    """A 429 with Retry-After: 1 from the host: the requests it had not yet been sent wait that second too."""
    names = ["busy.png", *(f"a{k}.png" for k in range(6))]
    write_images(tmp_path / "served", names)
    with MediaServer(tmp_path / "served", delay=0.3) as server:
        urls = [f"{server.url}/busy.png", *(f"{server.url}/wait/{name}" for name in names[1:])]
        counts = fetch_batch(urls, tmp_path / "media" / "batch.parquet", fetch_settings(per_host=2, threads=8),
                             progress=False)
        times = dict(server.times)
    assert counts["failed"] == 0
    asked = times["/busy.png"][0]  # the 429; a request sent alongside it may come just after
    assert not [t for ts in times.values() for t in ts if asked + 0.25 < t < asked + 0.95]


def test_a_host_keeps_to_its_limit_of_requests_in_flight_and_other_hosts_are_refused(tmp_path):
    names = [f"a{k}.png" for k in range(8)]
    write_images(tmp_path / "served", names)
    with MediaServer(tmp_path / "served", delay=0.3) as server:
        urls = [f"{server.url}/wait/{name}" for name in names]
        counts = fetch_batch(urls, tmp_path / "limited" / "batch.parquet",
                             fetch_settings(per_host=2, threads=8, part_size=8), progress=False)
        assert counts["fetched"] == 8 and server.most_in_flight == 2
        counts = fetch_batch(urls, tmp_path / "refused" / "batch.parquet",  # another folder: nothing to copy
                             fetch_settings(hosts=["images.example.org"]), progress=False)
        assert counts["failed"] == 8 and sum(server.requests.values()) == 8  # none of the second batch asked
    errors = pd.read_parquet(tmp_path / "refused" / "batch.parquet")["fetch_error"]
    assert set(errors) == {"host 127.0.0.1 is not in collection.fetch.hosts"}


def test_a_killed_fetch_resumes_where_it_stopped(tmp_path):
    """SIGKILL a fetch once its first part (2 URLs) is done: no batch file appears, and the next fetch asks
    only for what the killed one had not finished."""
    names = [f"a{k}.png" for k in range(6)]
    images = write_images(tmp_path / "served", names)
    media = tmp_path / "media" / "batch.parquet"
    settings = fetch_settings(per_host=1, threads=1, part_size=2)
    with MediaServer(tmp_path / "served", delay=0.4) as server:
        urls = [f"{server.url}/wait/{name}" for name in names]
        script = (f"from traitpipe.collection.fetch import fetch_batch\n"
                  f"fetch_batch({urls!r}, {str(media)!r}, {settings!r})")
        killed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not list(parts_folder(media).glob("*_stats.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert not media.exists()  # nothing half-written looks finished
        first = dict(server.requests)
        fetch_batch(urls, media, settings, progress=False)
        again = {path: server.requests[path] - first.get(path, 0) for path in server.requests}
    table = pd.read_parquet(media)
    assert table["image"].tolist() == [images[name] for name in names]
    done = [f"/wait/{name}" for name in names[:2]]  # the first part: its stats were written
    assert all(first[path] == 1 and again[path] == 0 for path in done)
    assert sum(again.values()) <= len(names) - 2
    assert not parts_folder(media).exists()


def test_a_resumed_fetch_with_another_part_size_fetches_every_url(tmp_path):
    """A fetch killed in its third part of 2 URLs, resumed with parts of 4: img2dataset numbers parts by position,
    so the old parts must not stand for the new ones (URLs 4 and 5 were lost that way)."""
    from traitpipe.collection.fetch import download_parts

    names = [f"a{k}.png" for k in range(6)]
    images = write_images(tmp_path / "served", names)
    media = tmp_path / "media" / "batch.parquet"
    with MediaServer(tmp_path / "served") as server:
        urls = [f"{server.url}/img/{name}" for name in names]
        download_parts(urls, parts_folder(media), fetch_settings(part_size=2), progress=False)
        for unfinished in parts_folder(media).glob("00002*"):  # as if killed in the third part
            unfinished.unlink()
        counts = fetch_batch(urls, media, fetch_settings(part_size=4), progress=False)
    assert counts["failed"] == 0
    assert pd.read_parquet(media)["image"].tolist() == [images[name] for name in names]


def test_a_url_another_batch_holds_is_copied_from_it_and_a_url_with_spaces_is_fetched(tmp_path):
    """Shards cut otherwise (a larger collection, another shard_size) make other batches: the images a batch
    file of the folder holds are read from it, not fetched again. A URL written with a space is encoded."""
    names = ["a.png", "b.png", "c d.png"]
    images = write_images(tmp_path / "served", names)
    with MediaServer(tmp_path / "served") as server:
        urls = [f"{server.url}/img/{name}" for name in names]
        first = fetch_batch(urls[:2], tmp_path / "media" / "first.parquet", fetch_settings(), progress=False)
        second = fetch_batch(urls, tmp_path / "media" / "second.parquet", fetch_settings(), progress=False)
        requests = dict(server.requests)
    assert (first, second) == ({"urls": 2, "fetched": 2, "copied": 0, "failed": 0},
                               {"urls": 3, "fetched": 1, "copied": 2, "failed": 0})
    assert requests == {"/img/a.png": 1, "/img/b.png": 1, "/img/c%20d.png": 1}
    assert pd.read_parquet(tmp_path / "media" / "second.parquet")["image"].tolist() == [images[n] for n in names]


def test_without_fetch_each_url_is_a_failures_row_that_says_what_to_do(small_collection, tmp_path):
    """A Darwin Core archive whose media are URLs, validated without collection.fetch: every URL a failures row
    saying to set it, nothing fetched (no server runs), and validate counts the URLs. A file:// URI is no path."""
    root = tmp_path / "c"
    root.mkdir()
    write_dwca(small_collection, root / "dwca.zip", base_url="http://127.0.0.1:9", extra_media=[
        ("occ0", "file:///etc/passwd")])
    config = write_config(tmp_path, root, evaluate={})
    raw = yaml.safe_load(config.read_text())
    raw["collection"].update(manifest="dwca.zip", phylogeny=None,
                             columns={"path": "path", "species": "species", "specimen": "catalogNumber"})
    config.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(config), "--out", str(tmp_path / "v")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "20 media are URLs: not read (set collection.fetch.enabled: true" in done.stdout
    failures = pd.read_parquet(tmp_path / "v" / "tables" / "failures")
    reasons = failures.set_index("path")["reason"]
    assert len(reasons) == 21 and reasons["file:///etc/passwd"].startswith("a file:// URI, not a path")
    urls = reasons[reasons.index.str.startswith("http://")]
    assert len(urls) == 20 and set(urls) == {
        "a URL: traitpipe reads local files; set collection.fetch.enabled: true to download the media first"}


def test_an_archive_of_urls_runs_end_to_end_and_a_second_run_fetches_nothing(small_collection, tmp_path):
    """The small collection as a Darwin Core archive whose media are URLs on the local server, plus one bad URL
    of each kind: with collection.fetch the workflow fetches (one batch per shard), segments, maps and reports
    every good image, each bad URL is its own failures row, and a second run asks the server for nothing."""
    import json
    import shutil

    from test_workflow import SMALL_SAM2, traitpipe

    root = Path(shutil.copytree(small_collection, tmp_path / "c"))
    write_images(root, ["slow.png", "truncated.png"])  # what those answers send (too late, cut short)
    with MediaServer(root) as server:
        manifest = write_dwca(root, root / "dwca.zip", base_url=server.url,
                              extra_media=[(f"occ{k}", server.url + path) for k, path in enumerate(BAD)])
        (root / "refs").mkdir()
        for _, group in manifest.groupby("species"):  # reference masks named as the URL's file, as for paths
            labelled = group[group["mask"] != ""].iloc[0]
            shutil.copy(root / labelled["mask"], root / "refs" / f"{labelled.specimen_id}.png")
        config = write_config(tmp_path, root, evaluate={}, shard_size=20, prompt_cam={"enabled": False},
                              phylo={"enabled": False}, segment={**SMALL_SAM2, "masks": "refs"})
        raw = yaml.safe_load(config.read_text())
        raw["collection"].update(manifest="dwca.zip", phylogeny=None, fetch={
            "enabled": True, "timeout": 1, "retries": 1, "backoff": 0.1, "max_bytes": 100_000, "part_size": 8},
            columns={"path": "path", "species": "species", "specimen": "catalogNumber", "ranks": ["family", "genus"]})
        config.write_text(yaml.safe_dump(raw))
        done = traitpipe("run", "--config", str(config), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        asked = dict(server.requests)
        again = traitpipe("run", "--config", str(config), cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert dict(server.requests) == asked  # nothing fetched twice
        # batches fetched by hand (traitpipe fetch, on a node with internet access): Snakemake, which has no
        # record of them, plans no fetch job either
        shutil.rmtree(tmp_path / ".snakemake")
        planned = traitpipe("run", "--config", str(config), "--", "-n", "--quiet", "rules", cwd=tmp_path)
        assert planned.returncode == 0 and "Nothing to be done" in planned.stdout + planned.stderr, planned.stdout
    results = tmp_path / "results"
    assert len(list((results / "media").glob("*.parquet"))) == 2  # two shards, a batch each

    def query(sql):
        return json.loads(traitpipe("query", "--results", str(results), "--format", "json", sql, cwd=tmp_path).stdout)

    assert query("select count(*) as n, count(fetched) as fetched, bool_and(starts_with(path, 'http://127.0.0.1')) "
                 "as urls, (select count(distinct image_id) from parts) as segmented from images") == [
        {"n": 20, "fetched": 20, "urls": True, "segmented": 20}]
    assert query("select count(distinct image_id) as n from cams") == [{"n": 20}]
    failures = {row["path"]: row["reason"] for row in query("select path, reason from failures")}
    assert {path.replace(server.url, ""): path for path in failures} == {path: server.url + path for path in BAD}
    for path, reason in BAD.items():
        assert reason in failures[server.url + path], (path, failures[server.url + path])
    assert (results / "report.html").is_file()
