"""The one image reader every stage uses.

An image comes as encoded bytes, from a file or from a Parquet column (large
biodiversity image sets ship that way), and leaves as an RGB 8-bit array with
its EXIF orientation applied. Anything that cannot become such an array raises
:class:`ImageError` with a reason fit for the ``failures`` table.
"""

from __future__ import annotations

import bisect
import collections
import functools
import hashlib
import io
import os
import re
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.parquet as pq
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure, never a grey half image
# Pillow's own decompression-bomb check would fire first at its fixed limit and hide collection.max_pixels:
# every reader here checks the declared size against max_pixels before decoding instead (check_size).
Image.MAX_IMAGE_PIXELS = None
#: The default pixel limit (collection.max_pixels).
MAX_PIXELS = 100_000_000


def check_size(image: Image.Image, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an opened (not yet decoded) image whose declared size exceeds ``max_pixels``.

    Examples
    --------
    >>> check_size(Image.new("L", (300, 200)), max_pixels=50_000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    traitpipe.collection.images.ImageError: too large: 300x200 = 60000 pixels > max_pixels 50000 (...)
    """
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"too large: {width}x{height} = {width * height} pixels > max_pixels {max_pixels} "
                         "(collection.max_pixels; refused before decoding)")

#: PIL modes converted to RGB, and how.
_MODES = {"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L"}


class ImageError(ValueError):
    """An image that cannot be used; ``str(error)`` is the reason."""


def image_id(data: bytes) -> str:
    """Stable image id: the first 16 hex digits of the sha256 of the encoded bytes.

    Parameters
    ----------
    data : bytes
        The encoded image, as stored.

    Returns
    -------
    str
        16 lowercase hex characters.
    """
    return hashlib.sha256(data).hexdigest()[:16]


#: The column of the fetch step's Parquet files saying why a URL was not downloaded
#: (:data:`traitpipe.collection.urls.ERROR_COLUMN`).
FETCH_ERROR = "fetch_error"
#: An image stored in a Parquet file's binary column: ``<file>.parquet#<column>/<row>`` (row: 0-based, in the file).
_PARQUET_CELL = re.compile(r"^(?P<file>.+\.parquet)#(?P<column>[^/]+)/(?P<row>\d+)$")


def source_file(path: str | Path) -> str:
    """The file on disk that holds an image: the path itself, or the container of an image stored in one
    (a zip archive's member ``a.zip!/m.png``, a Parquet cell ``a.parquet#image/7``).

    Examples
    --------
    >>> source_file("c/dwca.zip!/media/a.jpg"), source_file("c/shard.parquet#image/12"), source_file("c/a.png")
    ('c/dwca.zip', 'c/shard.parquet', 'c/a.png')
    """
    path = str(path)
    cell = _PARQUET_CELL.match(path)
    return cell["file"] if cell else path.split("!/", 1)[0]


def read_order(paths: Sequence[str]) -> list[int]:
    """Positions of ``paths`` in the order to read them: Parquet cells by file and row (each row group is then
    read once, see :func:`read_bytes`), everything else as given, after them.

    Examples
    --------
    >>> read_order(["a.parquet#image/12", "x.png", "a.parquet#image/3"])
    [2, 0, 1]
    """
    def key(k: int):
        cell = _PARQUET_CELL.match(str(paths[k]))
        return (0, cell["file"], int(cell["row"])) if cell else (1, "", k)
    return sorted(range(len(paths)), key=key)


#: Bytes of Parquet row groups a process keeps, the most recently used: images are not always read in storage
#: order (SST tracks a species' frames by image id; training draws at random), and a row group read again
#: costs all its images. A species whose row groups fit is then read once per reading process (a job and
#: each of its DataLoader workers: the segment job has up to 1 + 2 x loader.workers).
ROW_GROUP_CACHE_BYTES = 128 * 2**20


class _RowGroups:
    """The binary column chunks of the Parquet row groups read last, up to ``max_bytes`` in all (the last one
    read is always kept); ``reads`` counts the row groups read from disk."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.reads = max_bytes, 0
        self._groups: collections.OrderedDict[tuple, pyarrow.ChunkedArray] = collections.OrderedDict()
        self._lock = threading.Lock()  # threads asking for the same group wait for one read, not each their own

    def cell(self, file: str, column: str, group: int, mtime: float, row: int):
        """Row ``row`` (in the group) of one row group's column (``mtime``: a file rewritten is read again)."""
        key = (file, column, group, mtime)
        with self._lock:
            if key in self._groups:
                self._groups.move_to_end(key)
            else:
                self._groups[key] = pq.ParquetFile(file).read_row_group(group, columns=[column]).column(0)
                self.reads += 1
                while len(self._groups) > 1 and sum(c.nbytes for c in self._groups.values()) > self.max_bytes:
                    self._groups.popitem(last=False)
            return self._groups[key][row].as_py()

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()
            self.reads = 0


_ROW_GROUPS = _RowGroups(ROW_GROUP_CACHE_BYTES)


@functools.lru_cache(maxsize=16)
def _row_group_starts(file: str, mtime: float) -> tuple[tuple[str, ...], list[int]]:
    """A Parquet file's column names and the first row of each row group, then its row count (from its footer,
    read once per file and version rather than once per image)."""
    meta = pq.ParquetFile(file).metadata
    starts = [0]
    for group in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(group).num_rows)
    return tuple(meta.schema.names), starts


def _parquet_cell(file: str, column: str, row: int) -> bytes:
    """The bytes of one cell, reading only the row group that holds it (kept while it fits in
    ``ROW_GROUP_CACHE_BYTES`` with the others read since)."""
    try:
        mtime = os.path.getmtime(file)
        names, starts = _row_group_starts(file, mtime)
        if column not in names:
            raise ImageError(f"missing file: {file} has no column {column!r}")
        if row >= starts[-1]:
            raise ImageError(f"missing file: {file} has {starts[-1]} rows, none numbered {row}")
        group = bisect.bisect_right(starts, row) - 1
        cell = _ROW_GROUPS.cell(file, column, group, mtime, row - starts[group])
        if cell is None and FETCH_ERROR in names:  # a URL the fetch step could not download: say why
            error = pq.ParquetFile(file).read_row_group(group, columns=[FETCH_ERROR]).column(0)[row - starts[group]]
            raise ImageError(f"not fetched: {error.as_py()}")
        if cell is None:
            raise ImageError(f"empty file (no bytes in {file} column {column!r} row {row})")
        return bytes(cell)
    except FileNotFoundError:
        raise ImageError(f"missing file: {file}") from None
    except (OSError, pyarrow.ArrowException) as error:
        raise ImageError(f"unreadable Parquet file {file}: {error}") from None


def read_bytes(path: str | Path) -> bytes:
    """Read an image file's bytes, turning a missing or unreadable file into :class:`ImageError`.

    ``<archive>.zip!/<member>`` reads a member of a zip archive (a Darwin Core archive's images);
    ``<file>.parquet#<column>/<row>`` a cell of a Parquet file's binary column, reading the row group that
    holds it and no more (images stored as binary columns, as Imageomics' download tools write them).
    """
    cell = _PARQUET_CELL.match(str(path))
    if cell:
        return _parquet_cell(cell["file"], cell["column"], int(cell["row"]))
    archive, _, member = str(path).partition("!/")
    if member:
        try:
            with zipfile.ZipFile(archive) as zipped:
                return zipped.read(member)
        except KeyError:
            raise ImageError(f"missing file: {member} is not in the archive {archive}") from None
        except (OSError, zipfile.BadZipFile) as error:
            raise ImageError(f"unreadable archive member {path}: {error}") from None
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"missing file: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"not a file but a folder: {path}") from None
    except OSError as error:
        raise ImageError(f"unreadable file {path}: {error.strerror or error}") from None


def decode(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image to RGB 8-bit, EXIF orientation applied.

    Parameters
    ----------
    data : bytes
        Encoded image (PNG, JPEG, TIFF, WebP, ... whatever Pillow reads).
    max_pixels : int
        Larger images are refused before they are decoded.

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    ImageError
        Empty, unidentifiable, truncated, too large, or of a mode with no faithful
        8-bit RGB form (32-bit integer or float images).
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))  # the header only
        check_size(image, max_pixels)
        if image.mode not in _MODES:
            raise ImageError(f"unsupported mode {image.mode!r} (32-bit integer or float); convert to 8-bit RGB")
        image.load()
        image = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot decode: {error}") from None
    return _to_rgb8(image)


def _significant_bits(wide: np.ndarray) -> int:
    """The bits a 16-bit image's values use (at least 8): 10, 12 or 14 for a camera's data stored in 16-bit
    files, whose top bits are then always 0. Shifting by 8 would leave such an image 4 to 64 grey levels.

    Examples
    --------
    >>> _significant_bits(np.array([0, 4095], np.uint16)), _significant_bits(np.array([7, 65535], np.uint16))
    (12, 16)
    >>> _significant_bits(np.array([0, 200], np.uint16))
    8
    """
    return max(8, int(wide.max()).bit_length())


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of a mode in ``_MODES`` to (H, W, 3) uint8."""
    if image.mode.startswith("I;16"):
        wide = np.asarray(image, dtype=np.uint16)
        gray = (wide >> _significant_bits(wide) - 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # composite transparent pixels on white, the usual scan background
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy


#: The EXIF tag that holds the orientation.
ORIENTATION_TAG = 0x0112


def stored_orientation(path: str | Path) -> tuple[tuple[int, int], int]:
    """An image file's stored (H, W), before its EXIF orientation, and that orientation (1 = none).

    Reads the header only. Raises :class:`ImageError` for a file Pillow cannot identify.
    """
    try:
        with Image.open(io.BytesIO(read_bytes(path)) if source_file(path) != str(path) else path) as image:
            width, height = image.size
            return (height, width), int(image.getexif().get(ORIENTATION_TAG, 1))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageError(f"cannot read the header of {path}: {error}") from None


def read_image(source: str | Path | bytes, *, max_pixels: int = MAX_PIXELS,
               expected_id: str | None = None) -> np.ndarray:
    """Read one image from a path or from encoded bytes.

    Parameters
    ----------
    source : str, Path or bytes
        A file path, or the encoded image itself (e.g. a Parquet binary cell).
    max_pixels : int
        Size limit, see :func:`decode`.
    expected_id : str or None
        The :func:`image_id` ingest gave these bytes: an :class:`ImageError` when they changed since.

    Returns
    -------
    numpy.ndarray of uint8, shape (H, W, 3)
    """
    data = bytes(source if isinstance(source, (bytes, bytearray, memoryview)) else read_bytes(source))
    if expected_id is not None and image_id(data) != expected_id:
        raise ImageError(f"changed since ingest: its content is image_id {image_id(data)}, ingest read "
                         f"{expected_id}; run the workflow again (ingest rereads a changed image)")
    return decode(data, max_pixels=max_pixels)
