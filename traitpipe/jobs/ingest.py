"""Ingest one shard: its manifest rows -> its ``images`` and ``failures`` tables
(:func:`traitpipe.collection.ingest.ingest`)."""

from __future__ import annotations

import pandas as pd

from traitpipe.collection.ingest import ingest
from traitpipe.jobs.step import Step


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job ingest --config RUN_CONFIG --rows ROWS --images T --failures T``.

    ``ROWS`` is the shard's manifest rows (Parquet, from ``shard_rows``) that the workflow wrote
    when it started; the image files they name are the rule's inputs.
    """
    step = Step("ingest", argv, paths=("rows", "images", "failures"), compute=False)
    images, failures = ingest(step.config, pd.read_parquet(step.args.rows))
    step.write("images", images, step.args.images, list(step.config["collection"]["columns"]["ranks"]))
    step.write_failures(failures)
    step.finish(f"{len(images)} usable images, {len(failures)} failures, {images['species'].nunique()} species")
