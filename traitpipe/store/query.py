"""DuckDB over a run's Parquet tables: one view per table, named after it."""

from __future__ import annotations

from pathlib import Path

import duckdb


def table_names(results: str | Path) -> list[str]:
    """Tables that have at least one Parquet file under ``<results>/tables``."""
    root = Path(results) / "tables"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("part-*.parquet")))


def connect(results: str | Path = "results") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table of the run.

    Parameters
    ----------
    results : str or Path
        The run directory.

    Returns
    -------
    duckdb.DuckDBPyConnection
        Views ``images``, ``failures``, ... over
        ``<results>/tables/<table>/**/part-*.parquet`` (hive partitions become columns).
    """
    results = Path(results)
    if not (results / "tables").is_dir():
        raise FileNotFoundError(f"no tables under {results}/tables: run the workflow first (traitpipe demo or run)")
    con = duckdb.connect()
    for name in table_names(results):
        pattern = str(results / "tables" / name / "**" / "part-*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM read_parquet('{pattern}', "
                    "hive_partitioning = true, union_by_name = true)")
    return con
