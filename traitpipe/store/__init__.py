"""Outputs: Parquet tables, Zarr map stores, provenance, atomic writes, DuckDB queries."""

from traitpipe.store.atomic import atomic_path
from traitpipe.store.maps import background_writes, keep_images, map_path, map_writer, open_maps, write_maps
from traitpipe.store.provenance import provenance
from traitpipe.store.query import connect
from traitpipe.store.tables import read_provenance, read_table, table_path, write_table

__all__ = ["atomic_path", "background_writes", "connect", "keep_images", "map_path", "map_writer", "open_maps",
           "provenance", "read_provenance", "read_table", "table_path", "write_maps", "write_table"]
