"""Fetch one batch of URLs: img2dataset downloads them into the batch's Parquet file
(:func:`traitpipe.collection.fetch.fetch_batch`)."""

from __future__ import annotations

import pandas as pd

from traitpipe.collection.fetch import fetch_batch
from traitpipe.jobs.step import Step


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job fetch --config RUN_CONFIG --urls URLS --media OUT``.

    ``URLS`` is the batch's URLs (Parquet, column ``url``) that the workflow wrote when it started; ``OUT`` the
    batch's file in the media folder. A killed job's parts (``OUT.parts``) are kept: the next one resumes them.
    """
    step = Step("fetch", argv, paths=("urls", "media"), compute=False)
    urls = pd.read_parquet(step.args.urls)["url"].tolist()
    counts = fetch_batch(urls, step.args.media, step.config["collection"]["fetch"])
    step.finish(f"{counts['fetched']} of {counts['urls']} URLs fetched, {counts['copied']} copied from other batches, "
                f"{counts['failed']} failed (failures rows at ingest)")
