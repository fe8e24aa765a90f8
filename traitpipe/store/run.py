"""What the workflow writes when its jobs are about to run (never on a dry run): the resolved
run config, each shard's manifest rows and each batch's URLs to fetch, under ``<results>/run/``.

Jobs read these files; their rules take the path as a constant param and the content's digest
as a param (not an input), so that a changed config section or changed manifest rows rerun
exactly the jobs that read them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traitpipe.config import canonical_json
from traitpipe.store.atomic import atomic_path

DIGEST_KEY = b"traitpipe.rows_digest"


def run_config_path(results: str | Path) -> Path:
    """``<results>/run/config.json``: the validated config with every default, read by every job."""
    return Path(results) / "run" / "config.json"


def rows_path(results: str | Path, shard: str) -> Path:
    """``<results>/run/rows/<shard>.parquet``: the manifest rows one shard's ingest reads."""
    return Path(results) / "run" / "rows" / f"{shard}.parquet"


def urls_path(results: str | Path, batch: str) -> Path:
    """``<results>/run/urls/<batch>.parquet``: the URLs one fetch job downloads (column ``url``)."""
    return Path(results) / "run" / "urls" / f"{batch}.parquet"


def rows_digest(rows: pd.DataFrame) -> str:
    """sha256 (hex) of a frame's columns and values: equal rows give equal digests.

    Examples
    --------
    >>> a = pd.DataFrame({"path": ["x.png"], "row": [1]})
    >>> rows_digest(a) == rows_digest(a.copy()), rows_digest(a) == rows_digest(a.assign(row=2))
    (True, False)
    """
    values = pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()
    return hashlib.sha256(canonical_json(list(rows.columns)).encode() + values).hexdigest()


def write_run_config(path: str | Path, config: dict) -> bool:
    """Write the run config as canonical JSON unless the file already holds it; True when written."""
    text = canonical_json(config) + "\n"
    if Path(path).is_file() and Path(path).read_text() == text:
        return False
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return True


def write_rows(path: str | Path, rows: pd.DataFrame, digest: str) -> bool:
    """Write one shard's rows (Parquet, the digest in its metadata) unless the file holds that digest already.

    Returns True when written.
    """
    path = Path(path)
    if path.is_file():
        try:
            if (pq.read_schema(path).metadata or {}).get(DIGEST_KEY) == digest.encode():
                return False
        except (OSError, pa.ArrowInvalid):  # unreadable: write it again
            pass
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), DIGEST_KEY: digest.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return True
