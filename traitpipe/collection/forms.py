"""The forms a collection arrives in besides a manifest table, each read into a manifest table (strings, one
row per image) that :func:`traitpipe.collection.manifest.read_manifest` then checks like any other:

- a folder of species sub-folders: ``path`` and ``species`` (the sub-folder's name);
- a Darwin Core archive (a .zip with meta.xml): one row per image of the occurrence core's multimedia
  extension (Audubon Core ``accessURI`` or GBIF Simple Multimedia ``identifier``), ``path`` and ``species``
  (``scientificName``), and the core's ``catalogNumber`` and higher taxonomy under their Darwin Core names;
- Parquet files whose binary column holds the encoded images (``collection.columns.image``; the layout of
  Imageomics' download tools for millions of images): every other column, and a path naming the cell,
  ``<file>.parquet#<column>/<row>``. The images themselves are not read here, only where they are used, one
  row group at a time (:func:`traitpipe.collection.images.read_bytes`).

An image of an archive may lie beside it (a path relative to the archive's folder) or inside it: its path is
then ``<archive>!/<member>`` (:func:`traitpipe.collection.images.read_bytes` reads such members).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pandas as pd

#: Image file suffixes a species folder's images may have.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
#: Darwin Core terms of the core copied into the table (when the archive has them).
CORE_TERMS = ("catalogNumber", "kingdom", "phylum", "class", "order", "family", "genus")
#: Multimedia extensions and the term holding each image's location.
MEDIA_TERMS = {"http://rs.tdwg.org/ac/terms/Multimedia": "http://rs.tdwg.org/ac/terms/accessURI",
               "http://rs.gbif.org/terms/1.0/Multimedia": "http://purl.org/dc/terms/identifier"}
DWC = "http://rs.tdwg.org/dwc/terms/"


def _relative(file: Path, root: Path) -> str:
    """``file`` relative to ``root`` where it lies under it, else absolute (the manifest's two path forms)."""
    return os.path.relpath(file, root) if Path(file).resolve().is_relative_to(root.resolve()) else str(file)


def folder_table(folder: str | Path, root: str | Path) -> pd.DataFrame:
    """One row per image file of a folder of species sub-folders (any depth below each).

    Parameters
    ----------
    folder : str or Path
        Holds one sub-folder per species, named as the species.
    root : str or Path
        The collection root paths are written relative to.

    Returns
    -------
    pandas.DataFrame
        ``path`` (str) and ``species`` (str), species and files in sorted order.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in ("Mily alba/a.png", "Mily alba/b.jpg", "Mily picta/notes.txt"):
    ...         (Path(tmp) / name).parent.mkdir(exist_ok=True)
    ...         _ = (Path(tmp) / name).write_bytes(b"")
    ...     folder_table(tmp, tmp).values.tolist()
    [['Mily alba/a.png', 'Mily alba'], ['Mily alba/b.jpg', 'Mily alba']]
    """
    folder, root = Path(folder), Path(root)
    rows = [{"path": _relative(file, root), "species": species.name}
            for species in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            for file in sorted(species.rglob("*")) if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES]
    return pd.DataFrame(rows, columns=["path", "species"])


def dwca_table(archive: str | Path, root: str | Path) -> pd.DataFrame:
    """One row per image of a Darwin Core archive's occurrences (python-dwca-reader reads the archive).

    Parameters
    ----------
    archive : str or Path
        The .zip (meta.xml, an occurrence core, a multimedia extension).
    root : str or Path
        The collection root paths are written relative to.

    Returns
    -------
    pandas.DataFrame
        ``path``, ``species`` (the core's ``scientificName``) and those of :data:`CORE_TERMS` the core has;
        an occurrence without an image has no row.

    Raises
    ------
    ValueError
        An invalid archive, one without a multimedia extension, or whose core has no scientificName.
    zipfile.BadZipFile
        A file that is not a zip archive.
    """
    from dwca.exceptions import InvalidArchive
    from dwca.read import DwCAReader

    archive, root = Path(archive), Path(root)
    with zipfile.ZipFile(archive) as zipped:
        members = set(zipped.namelist())
    try:
        reader = DwCAReader(str(archive), skip_metadata=True)  # the dataset's EML is not needed here
    except InvalidArchive as error:
        raise ValueError(f"Darwin Core archive {archive} is not valid: {error}") from None
    with reader:
        media = [rowtype for rowtype in MEDIA_TERMS if rowtype in {e.type for e in reader.descriptor.extensions}]
        if not media:
            raise ValueError(f"Darwin Core archive {archive} has no multimedia extension (Audubon Core or GBIF "
                             "Simple Multimedia): it names no image")
        if not reader.core_contains_term(DWC + "scientificName"):
            raise ValueError(f"Darwin Core archive {archive}: its core has no scientificName, the species")
        terms = [t for t in CORE_TERMS if reader.core_contains_term(DWC + t)]
        rows = []
        for core in reader:
            for extension in core.extensions:
                if extension.rowtype not in media:
                    continue
                location = extension.data.get(MEDIA_TERMS[extension.rowtype], "").strip()
                beside = archive.parent / location
                path = (_relative(beside, root) if location and beside.is_file() else
                        f"{_relative(archive, root)}!/{location}" if location in members else location)
                rows.append({"path": path, "species": core.data[DWC + "scientificName"].strip(),
                             **{t: core.data.get(DWC + t, "").strip() for t in terms}})
    return pd.DataFrame(rows, columns=["path", "species", *terms])


def parquet_images_table(source: str | Path, image: str, path_column: str, root: str | Path) -> pd.DataFrame:
    """One row per row of Parquet files whose column ``image`` holds encoded images, without reading them.

    Parameters
    ----------
    source : str or Path
        A Parquet file, or a folder of them (``**/*.parquet``, in sorted order).
    image : str
        The binary column (``collection.columns.image``).
    path_column : str
        The name of the path column written (``collection.columns.path``): ``<file>#<image>/<row>``, the
        file relative to ``root``, the row 0-based within it.
    root : str or Path

    Returns
    -------
    pandas.DataFrame
        The files' other columns as strings, and ``path_column``.

    Raises
    ------
    ValueError
        No Parquet file, or a file without the column or whose column is not binary.
    """
    import pyarrow
    import pyarrow.parquet as pq

    source, root = Path(source), Path(root)
    files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
    if not files:
        raise ValueError(f"{source} holds no Parquet file (collection.columns.image names a column of them)")
    tables = []
    for file in files:
        schema = pq.read_schema(file)
        if image not in schema.names:
            raise ValueError(f"{file} has no column {image!r} (collection.columns.image); it has "
                             f"{', '.join(schema.names)}")
        if not (pyarrow.types.is_binary(schema.field(image).type) or
                pyarrow.types.is_large_binary(schema.field(image).type)):
            raise ValueError(f"{file}: column {image!r} is {schema.field(image).type}, not binary (encoded images)")
        table = pq.read_table(file, columns=[n for n in schema.names if n != image]).to_pandas()
        table = table.astype(str).where(table.notna(), "")
        table[path_column] = [f"{_relative(file, root)}#{image}/{row}" for row in range(len(table))]
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
