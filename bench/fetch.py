"""Fetching media named by URL: traitpipe's fetch against img2dataset run as its users run it, and against the
bare downloads it cannot avoid, all from an HTTP server on 127.0.0.1 (tests/media_server.py).

Same 512 PNG images (256 x 256, about 197 kB each), 16 downloads at once:
(a) reference: img2dataset.download, as its README runs it (parquet in and out, one process of 16 threads,
    images kept as sent); its time includes its start (a spawned process and a logger process, seconds), which
    a larger list spreads over more images;
(b) traitpipe.collection.fetch.fetch_batch with per_host 16 (the same concurrency), then at its default per_host 4;
(c) the limit: 16 threads each reading whole answers with urllib, nothing written.
Each is the best of 3 runs. Goal: (b) at per_host 16 is at least 0.8 of (a)'s images per second: the polite opener (slots, bounded reads, the
answer kept in memory) and writing one Parquet file cost little. The default's images per second are what the
README's "Your own collection" quotes for a local server. Last line: a JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_server import MediaServer  # noqa: E402  (tests/media_server.py: the tests' local server)

from traitpipe.collection.fetch import fetch_batch  # noqa: E402
from traitpipe.config import validate_config  # noqa: E402

N, SIDE, THREADS = 512, 256, 16


def settings(**overrides) -> dict:
    fetch = {"enabled": True, "threads": THREADS, "part_size": 128, **overrides}
    return validate_config({"collection": {"root": ".", "manifest": "m.csv", "fetch": fetch}})["collection"]["fetch"]


def timed(run, repeats: int = 3) -> float:
    """The best of ``repeats`` runs' seconds (each run writes afresh)."""
    best = float("inf")
    for k in range(repeats):
        start = time.perf_counter()
        run(k)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1"  # a proxy of the environment must not see them
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import img2dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "served").mkdir()
        rng = np.random.default_rng(0)
        for k in range(N):
            Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), np.uint8)).save(tmp / "served" / f"{k}.png")
        total = sum(p.stat().st_size for p in (tmp / "served").iterdir())
        with MediaServer(tmp / "served") as server:
            urls = [f"{server.url}/img/{k}.png" for k in range(N)]
            pq.write_table(pa.table({"url": urls}), tmp / "urls.parquet")

            def reference(k):
                img2dataset.download(url_list=str(tmp / "urls.parquet"), input_format="parquet", url_col="url",
                                     output_format="parquet", output_folder=str(tmp / f"i2d{k}"), processes_count=1,
                                     thread_count=THREADS, resize_mode="no", disable_all_reencoding=True,
                                     extract_exif=False, number_sample_per_shard=128)

            def bare(k):
                def get(url):
                    with urllib.request.urlopen(url, timeout=30) as answer:
                        return len(answer.read())
                with ThreadPoolExecutor(THREADS) as pool:
                    assert sum(pool.map(get, urls)) == total

            seconds = {"reference": timed(reference),
                       # each run in a folder of its own: a batch file beside it would be copied, not fetched
                       "ours_same_concurrency": timed(lambda k: fetch_batch(
                           urls, tmp / f"a{k}" / "batch.parquet", settings(per_host=THREADS), progress=False)),
                       "ours_default": timed(lambda k: fetch_batch(urls, tmp / f"b{k}" / "batch.parquet", settings(),
                                                                   progress=False)),
                       "bare": timed(bare)}
        assert pq.read_table(tmp / "a0" / "batch.parquet").column("fetch_error").null_count == N
    per_s = {name: N / s for name, s in seconds.items()}
    ratio = per_s["ours_same_concurrency"] / per_s["reference"]
    result = {"images": N, "image_bytes": total // N, "threads": THREADS,
              **{f"images_per_s_{name}": round(v, 1) for name, v in per_s.items()},
              "ms_per_image_default": round(1000 / per_s["ours_default"], 2),
              "ratio_vs_reference": round(ratio, 3),
              "fraction_of_bare": round(per_s["ours_same_concurrency"] / per_s["bare"], 3),
              "goal_ratio_vs_reference": 0.8, "met": ratio >= 0.8}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
