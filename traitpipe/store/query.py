"""DuckDB over a run's Parquet tables: one view per table, named after it."""

from __future__ import annotations

from pathlib import Path

import duckdb


def sql_string(text: str) -> str:
    """A SQL string literal of ``text`` (single quotes doubled).

    Examples
    --------
    >>> sql_string("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"


def glob_literal(path: str) -> str:
    """``path`` as a DuckDB glob that matches only itself (``[``, ``*`` and ``?`` as one-character classes).

    Examples
    --------
    >>> glob_literal("res [1]/part-*.parquet")
    'res [[]1]/part-[*].parquet'
    """
    return "".join(f"[{c}]" if c in "[*?" else c for c in path)


def sql_identifier(text: str) -> str:
    """A quoted SQL identifier of ``text`` (double quotes doubled).

    Examples
    --------
    >>> sql_identifier('a"b')
    '"a""b"'
    """
    return '"' + text.replace('"', '""') + '"'


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
        Views ``images``, ``failures``, ... over the files
        ``<results>/tables/<table>/**/part-*.parquet`` (hive partitions become columns). The files are listed
        here and named to DuckDB one by one, quoted and glob-escaped, so no character of a folder name (quotes,
        ``*``, ``[``) is read as SQL or as a glob.
    """
    results = Path(results)
    if not (results / "tables").is_dir():
        raise FileNotFoundError(f"no tables under {results}/tables: run the workflow first (traitpipe demo or run)")
    con = duckdb.connect()
    for name in table_names(results):
        files = ", ".join(sql_string(glob_literal(str(f))) for f in sorted((results / "tables" / name).rglob("part-*.parquet")))
        con.execute(f"CREATE VIEW {sql_identifier(name)} AS SELECT * FROM read_parquet([{files}], "
                    "hive_partitioning = true, union_by_name = true)")
    return con
