"""Collection manifests: a CSV or Parquet table with one row per image.

Column names come from the config (``collection.columns``); paths resolve under
the collection root. Errors name the file, the config key, the row and the fix.
"""

from __future__ import annotations

import difflib
import functools
import os
import zipfile
from pathlib import Path

import pandas as pd

from traitpipe.collection.forms import IMAGE_SUFFIXES, dwca_table, folder_table, parquet_images_table
from traitpipe.collection.images import source_file
from traitpipe.collection.urls import scheme
from traitpipe.config import collection_file

#: What each configurable column holds, for error messages.
_COLUMN_ROLES = {
    "path": "the image file path (relative to collection.root, or absolute)",
    "species": "the species name",
    "specimen": "the specimen id",
    "mask": "the path of a labelled reference mask (on the row of the image it labels)",
    "parts_truth": "the path of the image's true part labels (evaluation only)",
    "trait_truth": "the path of the image's true trait mask (evaluation only)",
}
#: Columns holding a path that resolves under the collection root ("" when absent).
_PATH_COLUMNS = ("mask", "parts_truth", "trait_truth")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message says what to fix."""


def read_table(path: Path, root: str | Path = ".", image: str | None = None,
               path_column: str = "path") -> pd.DataFrame:
    """The manifest's table, strings throughout: a CSV, TSV or Parquet file, a Darwin Core archive or a folder
    of species sub-folders (:mod:`traitpipe.collection.forms`; their paths written relative to ``root``), or
    Parquet files holding the images in column ``image`` (their cells named in ``path_column``). A file that
    cannot be read is a :class:`ManifestError` naming the file, the line where it can, and the fix."""
    import pyarrow

    suffix = path.suffix.lower()
    if image is not None:
        try:
            return parquet_images_table(path, image, path_column, root)
        except ValueError as error:
            raise ManifestError(str(error)) from None
        except pyarrow.ArrowException as error:
            raise ManifestError(f"manifest {path}: not a readable Parquet file ({error})") from None
    if path.is_dir():
        table = folder_table(path, root)
        if table.empty:
            raise ManifestError(f"collection folder {path} holds no species sub-folder with images "
                                f"({', '.join(IMAGE_SUFFIXES)})")
        return table
    if suffix == ".zip":
        try:
            return dwca_table(path, root)
        except zipfile.BadZipFile:
            raise ManifestError(f"manifest {path} is not a zip archive (a Darwin Core archive is one)") from None
        except ValueError as error:
            raise ManifestError(str(error)) from None
    if suffix not in (".csv", ".tsv", ".txt", ".parquet", ".pq"):
        raise ManifestError(f"manifest {path}: unknown format {suffix!r}; use .csv, .tsv or .parquet, a Darwin "
                            "Core archive (.zip) or a folder of species sub-folders")
    if path.stat().st_size == 0:
        raise ManifestError(f"manifest {path} is empty (0 bytes): write a header row, then one row per image")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                           encoding="utf-8")
    except UnicodeDecodeError as error:
        line = next(n for n, text in enumerate(path.read_bytes().splitlines(), 1) if not _is_utf8(text))
        raise ManifestError(f"manifest {path}: line {line} is not UTF-8 ({error.reason}); save the manifest as "
                            "UTF-8 (from Latin-1: iconv -f latin1 -t utf-8)") from None
    except pd.errors.ParserError as error:
        raise ManifestError(f"manifest {path}: cannot parse it: {str(error).strip().splitlines()[-1]} (a value "
                            "holding the separator must be quoted)") from None
    except pyarrow.ArrowException as error:
        raise ManifestError(f"manifest {path}: not a readable Parquet file ({error})") from None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _column_error(path: Path, key: str, name: str, columns: list[str]) -> ManifestError:
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    role = _COLUMN_ROLES.get(key, "a taxonomy rank")
    config_key = f"collection.columns.{key}"
    return ManifestError(
        f"manifest {path} has no column {name!r} (config key {config_key}); its columns are "
        f"{', '.join(map(repr, columns))}. Set {config_key} to the column that holds {role}.{hint}")


def outside_root(file: str | Path, root: str | Path) -> bool:
    """Whether a file resolves (``..`` and links followed) outside the collection root.

    Examples
    --------
    >>> outside_root("/data/c/../secret.png", "/data/c"), outside_root("/data/c/img/a.png", "/data/c")
    (True, False)
    >>> outside_root("/data/c/dwca.zip!/../../x.png", "/data/c")  # a member's name never leaves the archive
    False
    """
    file = os.fspath(source_file(file))  # an image stored in an archive or a Parquet file lies where its container does
    folder, name = os.path.split(os.path.join(os.getcwd(), file))
    if name in ("", ".", "..") or os.path.islink(file):
        resolved = os.path.realpath(file)
    else:  # the folder resolved once for all its files, the file itself not a link: one lstat per file
        resolved = os.path.join(_real_folder(folder), name)
    real_root = _real_folder(os.path.join(os.getcwd(), root))
    return not (resolved == real_root or resolved.startswith(os.path.join(real_root, "")))  # "" ends it with a /


@functools.lru_cache(maxsize=65536)
def _real_folder(folder: str) -> str:
    """``os.path.realpath`` of an absolute folder, remembered: a collection's images share few folders, and
    resolving each image's whole path (an lstat per component) took 35 s of planning 10^6 images."""
    return os.path.realpath(folder)


def read_manifest(path: str | Path, columns: dict, root: str | Path, allow_outside_root: bool = False) -> pd.DataFrame:
    """Read and check a manifest.

    Parameters
    ----------
    path : str or Path
        The manifest file (.csv, .tsv or .parquet), a Darwin Core archive (.zip) or a folder of species
        sub-folders.
    columns : dict
        ``collection.columns`` of the config: ``path`` and ``species`` (required),
        ``specimen``, ``mask``, ``parts_truth`` and ``trait_truth`` (None when absent), ``ranks``
        (list of rank columns).
    root : str or Path
        Collection root; relative image and mask paths resolve under it.
    allow_outside_root : bool
        Accept mask and truth files outside the root (image files outside it are the ingest step's failures
        rows unless allowed).

    Returns
    -------
    pandas.DataFrame
        One row per manifest row, columns: ``row`` (int, 1-based data row),
        ``path`` (str, as written), ``file`` (str, resolved; a URL as written), ``species``,
        ``specimen_id``, ``mask``, ``parts_truth`` and ``trait_truth`` (str, "" when absent; the
        paths resolved), then one str column
        per rank, named as in the manifest.

    Raises
    ------
    ManifestError
        Missing file, unknown format, no rows, a configured column missing, rows with an empty path or
        species, or a mask or truth file outside the root (not allowed).
    """
    path, root = Path(path), Path(root)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path} (config key collection.manifest)")
    table = read_table(path, root, columns.get("image"), columns["path"])
    if len(table) == 0:
        raise ManifestError(f"manifest {path} has no rows: add one row per image")
    names = [str(c) for c in table.columns]
    wanted = {key: columns.get(key) for key in _COLUMN_ROLES}
    wanted.update({f"ranks[{i}]": rank for i, rank in enumerate(columns.get("ranks") or [])})
    for key, name in wanted.items():
        if name is not None and name not in names:
            raise _column_error(path, key, name, names)

    out = pd.DataFrame({"row": range(1, len(table) + 1)})
    for key, target in (("path", "path"), ("species", "species"), ("specimen", "specimen_id"),
                        *((name, name) for name in _PATH_COLUMNS)):
        name = wanted[key]
        values = table[name] if name is not None else pd.Series([""] * len(table))
        out[target] = values.fillna("").astype(str).str.strip().to_numpy()
    for rank in columns.get("ranks") or []:
        out[rank] = table[rank].fillna("").astype(str).str.strip().to_numpy()

    for key in ("path", "species"):
        empty = out.loc[out[key] == "", "row"].tolist()
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            raise ManifestError(
                f"manifest {path}: {len(empty)} row(s) have an empty {wanted[key]!r} value "
                f"(collection.columns.{key}): rows {shown}. Every image needs {_COLUMN_ROLES[key]}.")
    # a URL (or another scheme's URI) is no path under the root: kept as written, ingest says what it is
    out["file"] = [str(p if Path(p).is_absolute() or scheme(p) else root / p) for p in out["path"]]
    for name in _PATH_COLUMNS:
        out[name] = [str(m if not m or Path(m).is_absolute() else root / m) for m in out[name]]
        outside = out.loc[[bool(m) and outside_root(m, root) for m in out[name]], "row"].tolist()
        if outside and not allow_outside_root:
            shown = ", ".join(map(str, outside[:10])) + (" ..." if len(outside) > 10 else "")
            raise ManifestError(
                f"manifest {path}: {len(outside)} row(s) name a {wanted[name]!r} file outside the collection root "
                f"{root} (rows {shown}): refused, never opened. Move the files under collection.root, or set "
                "collection.allow_outside_root: true if you mean it.")
    return out


def load_manifest(config: dict) -> pd.DataFrame:
    """The manifest of a validated run config (see :func:`read_manifest`)."""
    collection = config["collection"]
    return read_manifest(collection_file(config, "manifest"), collection["columns"], collection["root"],
                         collection["allow_outside_root"])
