"""What the jobs read: a shard's ``images`` rows, and their pixels as model inputs, each image read once.

A job holds rows, never a whole shard's pixels: :class:`ImageInputs` is a dataset that reads an image when a
model asks for it, :func:`read_once` the one pass of a map job over its shard, :class:`ReadAhead` the ordered
stream SAM 2 tracks, and an image that cannot be read becomes a ``failures`` row (:func:`failure_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from traitpipe.collection.images import MAX_PIXELS, ImageError, read_image, read_order
from traitpipe.collection.urls import media_folder


#: Images checked per DataLoader batch in :func:`readable`.
CHECK_BATCH = 64


def read_rows(tables: str | Sequence[str]) -> pd.DataFrame:
    """The ``images`` rows of one or more table files, ordered by (species, image_id)."""
    files = [tables] if isinstance(tables, str) else list(tables)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values(
        ["species", "image_id"]).reset_index(drop=True)


def load_pixels(config: dict, rows: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray, pd.DataFrame]:
    """Read the images of some ``images`` rows through the shared reader, each checked to be the bytes ingest
    read (its ``image_id``): an image replaced during a run fails with a reason instead of passing under
    another image's id.

    Parameters
    ----------
    config : dict
        The run config (collection root, max_pixels).
    rows : pandas.DataFrame
        Rows of the ``images`` table.

    Returns
    -------
    pixels : list of numpy.ndarray, uint8, each (H_i, W_i, 3)
        The images that could be read, in row order.
    ok : numpy.ndarray of bool, shape (len(rows),)
        Which rows were read.
    failures : pandas.DataFrame
        ``failures`` columns for the others (without ``stage``).
    """
    images = ImageInputs(config, rows)
    read, failed = {}, {}
    for i in read_order(images.files):  # images stored in Parquet: each row group read once
        try:
            read[i] = images.pixels(i)
        except ImageError as error:
            failed[i] = failure_rows(rows.iloc[[i]], str(error))
    ok = np.array([i in read for i in range(len(rows))], bool)
    return ([read[i] for i in sorted(read)], ok,
            pd.concat([failed[i] for i in sorted(failed)], ignore_index=True) if failed
            else failure_rows(rows.iloc[:0], ""))


def image_files(config: dict, rows: pd.DataFrame) -> list[str]:
    """The file of each ``images`` row: its ``path``, under ``collection.root`` unless absolute, or for a URL the
    cell of the media folder it was ``fetched`` to."""
    root = Path(config["collection"]["root"])
    fetched = rows["fetched"] if "fetched" in rows else [None] * len(rows)
    return [str(media_folder(config) / cell if isinstance(cell, str) else Path(p) if Path(p).is_absolute() else root / p)
            for p, cell in zip(rows["path"], fetched)]


def failure_rows(rows: pd.DataFrame, reason: str | np.ndarray) -> pd.DataFrame:
    """``failures`` rows (without ``stage``, the table's partition) for some ``images`` rows: one reason for all,
    or one per row (an array as long as ``rows``)."""
    return rows[["path", "image_id", "species", "shard", "row"]].assign(reason=reason).reset_index(drop=True)


class ImageInputs:
    """The images of some ``images`` rows as model inputs, a map-style dataset for a DataLoader: item ``i`` is
    float32 (3, size, size) (or the image as read, uint8 (H, W, 3), without a ``size``).

    Each image is read through the shared reader, checked to be the bytes ingest read (its ``image_id``),
    resized (bilinear, antialiased) and normalised, as :func:`traitpipe.models.transforms.to_batch`. A job
    holds its rows, never their pixels: DataLoader workers read them when the model asks
    (:class:`traitpipe.models.batches.Batches`).

    Parameters
    ----------
    config : dict
        The run config: ``collection.root`` and ``collection.max_pixels`` are read.
    rows : pandas.DataFrame
        ``images`` rows (``path``, ``image_id``).
    size : int or None
        Side of the square model input (None: the images are only read, through :meth:`pixels`).
    mean, std : sequence of 3 floats or None
        Per-channel normalisation in [0, 1] units.
    """

    def __init__(self, config: dict, rows: pd.DataFrame, size: int | None = None, mean=None, std=None):
        self.files, self.ids = image_files(config, rows), rows["image_id"].tolist()
        self.max_pixels = config["collection"]["max_pixels"]
        self.size, self.mean, self.std = size, mean, std

    def __len__(self) -> int:
        return len(self.files)

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as read: uint8 (H, W, 3); :class:`ImageError` when it cannot be read or changed."""
        return read_image(self.files[i], max_pixels=self.max_pixels, expected_id=self.ids[i])

    def __getitem__(self, i: int):
        """Image ``i`` as a model input, float32 (3, size, size); as read (:meth:`pixels`) when ``size`` is None."""
        if self.size is None:
            return self.pixels(i)
        from traitpipe.models.transforms import to_batch

        return to_batch([self.pixels(i)], self.size, self.mean, self.std)[0]


class _Problems:
    """Map-style dataset: item ``i`` is why image ``i`` of some :class:`ImageInputs` cannot be read ("" if it can)."""

    def __init__(self, inputs: ImageInputs):
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> str:
        try:
            self.inputs.pixels(i)
        except ImageError as error:
            return str(error)
        return ""


def readable(inputs: ImageInputs, workers: int = 0) -> np.ndarray:
    """Read every image of ``inputs`` once, in ``workers`` DataLoader processes, keeping none.

    Returns
    -------
    numpy.ndarray of object (str), shape (N,)
        Why each image cannot be read, "" for the readable ones.
    """
    import torch

    from traitpipe.models.batches import Batches

    problems = np.full(len(inputs), "", dtype=object)
    order = torch.tensor(read_order(inputs.files), dtype=torch.long)  # Parquet-stored images: row groups in turn
    for index, reasons in Batches(_Problems(inputs), CHECK_BATCH, workers)(order):
        problems[index.numpy()] = reasons
    return problems


class _Checked:
    """Map-style dataset: item ``i`` is (image ``i`` of some :class:`ImageInputs`, "") when it can be read,
    (zeros, why not) when it cannot: zeros of the model input's shape, or uint8 (0, 0, 3) when ``inputs`` has no
    ``size``."""

    def __init__(self, inputs: ImageInputs):
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int):
        import torch

        try:
            return self.inputs[i], ""
        except ImageError as error:
            size = self.inputs.size
            return (np.zeros((0, 0, 3), np.uint8) if size is None else torch.zeros((3, size, size))), str(error)


def read_once(inputs: ImageInputs, batch_size: int, workers: int = 0, device=None):
    """Batches of model inputs that read each image once: the shard jobs' one pass over their images.

    An image that cannot be read (or changed since ingest) enters its batch as zeros, so the batch keeps its
    place in the shard; the returned ``problems`` says which, once its batch has been yielded, and the job
    leaves those images out of what it writes (:func:`traitpipe.store.maps.keep_images`, ``failures`` rows).

    Parameters
    ----------
    inputs : ImageInputs
        With a ``size``: item float32 (3, size, size).
    batch_size, workers, device
        As :class:`traitpipe.models.batches.Batches`.

    Returns
    -------
    batches : callable
        ``batches()`` yields (index int64 (B,), batch float32 (B, 3, size, size)) in image order.
    problems : numpy.ndarray of object (str), shape (N,)
        Filled as batches are yielded: why each image could not be read, "" for the read ones.

    Examples
    --------
    >>> import tempfile
    >>> rows = pd.DataFrame({"path": ["gone.png"], "image_id": ["0" * 64]})
    >>> with tempfile.TemporaryDirectory() as root:
    ...     config = {"collection": {"root": root, "max_pixels": MAX_PIXELS}}
    ...     batches, problems = read_once(ImageInputs(config, rows, 8, [0.5] * 3, [0.5] * 3), batch_size=4)
    ...     [tuple(batch.shape) for _, batch in batches()], problems[0].startswith("missing file")
    ([(1, 3, 8, 8)], True)
    """
    from traitpipe.models.batches import Batches

    problems = np.full(len(inputs), "", dtype=object)
    loader = Batches(_Checked(inputs), batch_size, workers, device)

    def batches():
        for index, (batch, reasons) in loader():
            problems[index.numpy()] = reasons
            yield index, batch
    return batches, problems


class ReadAhead:
    """The images of some :class:`ImageInputs` (without a ``size``), read in a fixed order by ``workers``
    DataLoader processes a few images ahead of a reader that asks for each in turn: SAM 2 tracking one
    species' pseudo-video after another, each image read once.

    ``stream[i]`` is image ``i`` (uint8 (H, W, 3)); it raises :class:`ImageError` when that image cannot be
    read, and :class:`ValueError` when an image later in the order was already asked for (the images before
    ``i`` that nobody asked for are read and dropped). ``problems`` maps each image read that could not be
    read to why.

    Parameters
    ----------
    inputs : ImageInputs
        With ``size`` None.
    order : sequence of int
        Indices into ``inputs``, each at most once, in the order the reader will ask for them.
    workers : int
        DataLoader worker processes (0: read in this process, when asked).

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> from traitpipe.collection.images import image_id
    >>> with tempfile.TemporaryDirectory() as root:
    ...     Image.new("RGB", (4, 2)).save(f"{root}/a.png")
    ...     ids = [image_id(Path(f"{root}/a.png").read_bytes()), "0" * 64, "0" * 64]
    ...     config = {"collection": {"root": root, "max_pixels": MAX_PIXELS}}
    ...     stream = ReadAhead(ImageInputs(config, pd.DataFrame({"path": ["a.png"] * 3, "image_id": ids})), [2, 0, 1])
    ...     stream[0].shape, sorted(stream.problems), stream.problems[2].startswith("changed since ingest")
    ((2, 4, 3), [2], True)
    """

    def __init__(self, inputs: ImageInputs, order: Sequence[int], workers: int = 0):
        import torch

        from traitpipe.models.batches import Batches

        self.problems: dict[int, str] = {}
        self._place = {i: place for place, i in enumerate(order)}
        self._items = iter(Batches(_Checked(inputs), 1, workers)(torch.tensor(list(order), dtype=torch.long)))
        self._read = 0  # how many images of the order have been read
        self._last: np.ndarray | None = None  # the last one's pixels

    def __getitem__(self, i: int) -> np.ndarray:
        self.read_through(i)
        if i in self.problems:
            raise ImageError(self.problems[i])
        return self._last

    def read_through(self, i: int) -> None:
        """Read the order up to and including image ``i`` (the last one read is kept for ``stream[i]``)."""
        place = self._place[i]
        if place < self._read - 1:
            raise ValueError(f"image {i} comes before the last image read: ReadAhead reads forward only")
        while self._read <= place:
            index, (pixels, reasons) = next(self._items)
            if reasons[0]:
                self.problems[int(index[0])] = reasons[0]
            self._last, self._read = pixels[0].numpy(), self._read + 1


def leave_out_unread(rows: pd.DataFrame, problems: np.ndarray, records: list[dict]):
    """After :func:`read_once`'s pass: which images were read, their records, and ``failures`` rows of the others.

    Parameters
    ----------
    rows : pandas.DataFrame
        The N ``images`` rows the pass read.
    problems : numpy.ndarray of object (str), shape (N,)
        ``read_once``'s problems.
    records : list of dict
        Table rows, each with an ``image_id``.

    Returns
    -------
    read : numpy.ndarray of bool, shape (N,)
    records : list of dict
        Those of the images read.
    failures : pandas.DataFrame
        One row per image not read, with its reason.
    """
    read = problems == ""
    kept = set(rows.loc[read, "image_id"])
    return read, [r for r in records if r["image_id"] in kept], failure_rows(rows[~read], problems[~read])


def readable_inputs(config: dict, rows: pd.DataFrame, size: int | None = None, mean=None, std=None):
    """The readable ``images`` rows (re-indexed), their :class:`ImageInputs` and the ``failures`` rows of the
    others (every image read once here, in ``loader.workers`` processes)."""
    problems = readable(ImageInputs(config, rows, size, mean, std), config["loader"]["workers"])
    ok = problems == ""
    failures = [failure_rows(rows.iloc[[i]], problems[i]) for i in np.flatnonzero(~ok)]
    rows = rows[ok].reset_index(drop=True)
    return (rows, ImageInputs(config, rows, size, mean, std),
            pd.concat(failures, ignore_index=True) if failures else failure_rows(rows.iloc[:0], ""))
