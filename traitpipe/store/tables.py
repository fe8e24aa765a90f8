"""Parquet tables: one zstd file per shard and table, hive-partitioned where it helps."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from traitpipe.store.atomic import atomic_path
from traitpipe.store.schemas import PARTITIONS, RUN_COLUMNS, table_schema

PROVENANCE_KEY = b"traitpipe.provenance"


def table_path(results: str | Path, table: str, shard: str, partition: str | None = None) -> Path:
    """Path of one table file.

    Parameters
    ----------
    results : str or Path
        The run directory.
    table : str
        Table name (a key of ``schemas.TABLES``).
    shard : str
        Shard name; the file is ``part-<shard>.parquet``.
    partition : str or None
        Value of the table's partition column (required for partitioned tables).

    Returns
    -------
    Path
        ``<results>/tables/<table>/[<column>=<partition>/]part-<shard>.parquet``
    """
    folder = Path(results) / "tables" / table
    if table in PARTITIONS:
        if partition is None:
            raise ValueError(f"table {table!r} is partitioned by {PARTITIONS[table]!r}: give a partition value")
        folder = folder / f"{PARTITIONS[table]}={partition}"
    return folder / f"part-{shard}.parquet"


def write_table(rows: pd.DataFrame | Iterable[dict], path: str | Path, table: str, provenance: dict,
                extra: list[str] | None = None) -> Path:
    """Write one table file atomically, with run columns and provenance.

    Parameters
    ----------
    rows : pandas.DataFrame or iterable of dict
        The table's columns (see ``schemas.TABLES``), any ``extra`` columns; may be empty. Records
        (one dict per row) take their columns from the schema, so no records is an empty table.
    path : str or Path
        Destination, normally from :func:`table_path`.
    table : str
        Table name, for the schema.
    provenance : dict
        From ``traitpipe.store.provenance.provenance``; gives ``run_id`` and
        ``config_hash`` and goes into the file metadata.
    extra : list of str or None
        Extra string columns, see ``schemas.table_schema``.

    Returns
    -------
    Path
        The written file.
    """
    schema = table_schema(table, extra)
    if not isinstance(rows, pd.DataFrame):
        run = {field.name for field in RUN_COLUMNS}
        rows = pd.DataFrame(list(rows), columns=[name for name in schema.names if name not in run])
    rows = rows.assign(run_id=provenance["run_id"], config_hash=provenance["config_hash"])
    missing = [name for name in schema.names if name not in rows.columns]
    if missing:
        raise ValueError(f"table {table!r}: rows lack column(s) {', '.join(missing)}")
    arrow = pa.Table.from_pandas(rows[schema.names], schema=schema, preserve_index=False)
    arrow = arrow.replace_schema_metadata({PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")
    return Path(path)


def read_table(results: str | Path, table: str) -> pd.DataFrame:
    """Read every file of a table (all shards and partitions) into one DataFrame.

    Returns an empty DataFrame when the table has no files yet.
    """
    folder = Path(results) / "tables" / table
    files = sorted(folder.rglob("part-*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame()
    dataset = ds.dataset([str(f) for f in files], format="parquet", partitioning="hive",
                         partition_base_dir=str(folder))
    return dataset.to_table().to_pandas()


def read_table_files(files: Iterable[str | Path], table: str) -> pd.DataFrame:
    """Read some files of one table (a rule's inputs) into one DataFrame, with the partition column of a
    partitioned table taken from each file's folder (``<column>=<value>``). No files: an empty frame with
    the table's columns."""
    files = [Path(f) for f in files]
    column = PARTITIONS.get(table)
    frames = []
    for file in files:
        frame = pd.read_parquet(file)
        if column is not None:
            key, _, value = file.parent.name.partition("=")
            if key != column:
                raise ValueError(f"{file}: a {table!r} file lies in a '{column}=<value>' folder")
            frame.insert(0, column, value)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=([column] if column else []) + table_schema(table).names)
    return pd.concat(frames, ignore_index=True)


def read_provenance(path: str | Path) -> dict:
    """The provenance record stored in a table file's metadata."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[PROVENANCE_KEY])
