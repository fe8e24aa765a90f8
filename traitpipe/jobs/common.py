"""I/O shared by the jobs: shard rows, pixels through the one reader, failures, model files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from traitpipe.collection.images import MAX_PIXELS, ImageError, check_size, read_image, read_order, stored_orientation
from traitpipe.store.atomic import atomic_path
from traitpipe.segment.parts import check_support_mask
from traitpipe.segment.references import reference_origin

#: Images checked per DataLoader batch in :func:`readable`.
CHECK_BATCH = 64
#: Phylo-NN's input normalisation (mean, std per channel): pixels in [-1, 1].
PHYLO_MEAN_STD = ([0.5] * 3, [0.5] * 3)


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
    """The file of each ``images`` row: its ``path``, under ``collection.root`` unless absolute."""
    root = Path(config["collection"]["root"])
    return [str(Path(p) if Path(p).is_absolute() else root / p) for p in rows["path"]]


def failure_rows(rows: pd.DataFrame, reason: str | np.ndarray) -> pd.DataFrame:
    """``failures`` rows (without ``stage``, the table's partition) for some ``images`` rows: one reason for all,
    or one per row (an array as long as ``rows``)."""
    return rows[["path", "image_id", "species", "shard", "row"]].assign(reason=reason).reset_index(drop=True)


def accuracy_rows(method: str, correct: np.ndarray, is_val: np.ndarray) -> tuple[dict[str, float], list[dict]]:
    """Top-1 accuracy on the training and held-out images: {"train": a, "val": a} (NaN where a subset is
    empty) and the ``evaluation`` records.

    Parameters
    ----------
    method : str
        The ``evaluation.method`` value.
    correct, is_val : numpy.ndarray of bool, shape (N,)
        Whether each image was classified right, and whether it is held out.
    """
    accuracy, records = {}, []
    for subset, chosen in (("train", ~is_val), ("val", is_val)):
        accuracy[subset] = float(correct[chosen].mean()) if chosen.any() else float("nan")
        records.append({"method": method, "metric": "top1_accuracy", "subset": subset, "level": None,
                        "value": accuracy[subset], "n": int(chosen.sum())})
    return accuracy, records


def write_json(path: str | Path, value: dict) -> Path:
    """Write a JSON file atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=1, sort_keys=True, default=str) + "\n")
    return Path(path)


def labelled_images(config: dict, tables: Sequence[str], size: int, mean, std, val_fraction: float, seed: int,
                    classes=None):
    """The readable images of ``tables`` as a streamed dataset, with labels and a validation split by specimen.

    Every image is read once here to find the unreadable ones (in ``loader.workers`` processes); the
    returned dataset reads them again when a model asks, so memory does not grow with the collection.
    ``classes`` (a model's class order; default: the sorted species) sets which label each species gets.

    Returns
    -------
    rows : pandas.DataFrame
        The readable ``images`` rows, in dataset order.
    images : ImageInputs
        Item i: float32 (3, size, size), image i resized and normalised.
    labels : torch.Tensor, int64, shape (N,)
    is_val : numpy.ndarray of bool, shape (N,)
        Held-out specimens (an image without a specimen id is its own specimen).
    failures : pandas.DataFrame
        ``failures`` rows of the unreadable images.
    """
    import torch

    rows, images, failures = readable_inputs(config, read_rows(tables), size, mean, std)
    order = {name: i for i, name in enumerate(classes if classes is not None else sorted(rows["species"].unique()))}
    labels = torch.tensor(rows["species"].map(order).to_numpy(np.int64))
    return rows, images, labels, held_out(rows, val_fraction, seed), failures


def split(images, labels, is_val: np.ndarray):
    """The training and the held-out part of a dataset and its labels: ``(images, labels), (images, labels)``,
    each images a :class:`torch.utils.data.Subset` and labels int64 (n,), for ``is_val`` bool (N,)."""
    from torch.utils.data import Subset

    parts = [np.flatnonzero(chosen).tolist() for chosen in (~is_val, is_val)]
    return tuple((Subset(images, part), labels[part]) for part in parts)


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


def load_support(config: dict, species: str, chosen: dict[str, tuple[str, str]],
                 names: dict[int, str] | None) -> tuple[np.ndarray, np.ndarray, str, dict[int, str]]:
    """A species' support image (H, W, 3) uint8, its checked labels (H, W) uint8, its image file and part names.

    Raises ImageError when the species has no usable reference: none found (the reason names where it was
    looked for), unreadable, or failing :func:`~traitpipe.segment.parts.check_support_mask`.
    """
    if species not in chosen:
        collection = config["collection"]
        where = reference_origin(config["segment"]["masks"], collection["root"], collection["columns"]["mask"])
        raise ImageError(f"no reference mask for species {species!r} (looked in {where})")
    image_file, mask_file = chosen[species]
    try:
        support = read_image(image_file, max_pixels=config["collection"]["max_pixels"])
    except ImageError as error:  # every image of the species fails for this: say it is the reference's fault
        raise ImageError(f"reference image unreadable ({image_file}: {error}); segmenting species {species!r} "
                         "needs it") from None
    stored_size, orientation = stored_orientation(image_file)
    mask = read_mask(mask_file)
    parts = names or {int(v): f"part_{int(v)}" for v in np.unique(mask) if v > 0}
    try:
        labels = check_support_mask(mask, parts, mask_file, support.shape[:2], stored_size=stored_size,
                                    orientation=orientation, image=image_file)
    except ValueError as error:  # a bad reference fails its species (failures rows), not the whole shard
        raise ImageError(str(error)) from None
    return support, labels, image_file, parts


def read_mask(file: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A reference mask as stored (2-D labels); :class:`ImageError` when it cannot be read or declares more than
    ``max_pixels`` (checked before decoding)."""
    try:
        with Image.open(file) as image:
            check_size(image, max_pixels)
            return np.array(image)
    except ImageError as error:
        raise ImageError(f"reference mask {file}: {error}") from None
    except (OSError, ValueError) as error:
        raise ImageError(f"unreadable reference mask {file}: {error}") from None


def read_truth(file: str, size: tuple[int, int], what: str) -> np.ndarray:
    """A truth mask (2-D labels) of an image of ``size`` (H, W); :class:`ImageError` naming the file, what it
    holds (``what``: "parts", "trait") and both sizes when it cannot be read or has another size."""
    mask = read_mask(file)
    if mask.ndim != 2 or mask.shape != tuple(size):
        raise ImageError(f"{what} truth mask {file} is {'x'.join(map(str, mask.shape))} but its image is "
                         f"{size[0]}x{size[1]} (HxW, 2-D labels): a truth mask must have its image's size")
    return mask


def truth_images(config: dict, rows: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray], pd.DataFrame,
                                                               list[str]]:
    """The images of some ``images`` rows that have a readable true part mask (``parts_truth``).

    Returns
    -------
    frames : list of numpy.ndarray, uint8, each (H_i, W_i, 3)
    truths : list of numpy.ndarray, integer, each (H_i, W_i)
    kept : pandas.DataFrame
        Their rows, in order.
    skipped : list of str
        Why a truth mask could not be used.
    """
    if "parts_truth" not in rows:
        return [], [], rows.iloc[:0], []
    rows = rows[rows["parts_truth"].fillna("") != ""]
    pixels, ok, _ = load_pixels(config, rows)
    frames, truths, kept, skipped = [], [], [], []
    for image, (index, row) in zip(pixels, rows[ok].iterrows()):
        try:
            truths.append(read_truth(row["parts_truth"], image.shape[:2], "parts"))
        except ImageError as error:
            skipped.append(str(error))
            continue
        frames.append(image)
        kept.append(index)
    return frames, truths, rows.loc[kept], skipped


def sam2_split(description: str | None) -> dict[str, set[str]]:
    """The species a SAM 2 trained here trained on and held out (``models/sam2_trained.json``), as evaluation
    subsets ``trained`` and ``held_out``; none without a description."""
    if description is None:
        return {}
    trained = json.loads(Path(description).read_text())
    return {"trained": set(trained["species"]), "held_out": set(trained["held_out"])}


def phylo_images(config: dict, rows: pd.DataFrame):
    """Phylo-NN's input: the readable rows, their images in [-1, 1] at ``phylo.image_size`` as a streamed
    dataset (item: float32 (3, S, S)) and ``failures`` rows for the others (see :func:`readable_inputs`)."""
    return readable_inputs(config, rows, config["phylo"]["image_size"], *PHYLO_MEAN_STD)


def species_ranks(config: dict, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The taxonomy rank columns (``collection.columns.ranks``) of ``images`` rows, one row per species; None without."""
    ranks = list(config["collection"]["columns"]["ranks"])
    return rows.drop_duplicates("species").set_index("species")[ranks] if ranks else None


def held_out(rows: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Which ``images`` rows are held out: whole specimens, about ``val_fraction`` of each species'.

    An image without a specimen id is its own specimen. Returns bool (len(rows),).
    """
    from traitpipe.models.training import split_by_specimen

    specimens = rows["specimen_id"].fillna("").to_numpy(dtype=str)
    specimens = np.where(specimens == "", rows["image_id"].to_numpy(dtype=str), specimens)
    species = rows["species"].astype("category").cat.codes.to_numpy()
    return split_by_specimen(specimens, species, val_fraction, seed)


def cryptic_pairs(file: str | None) -> list[tuple[str, str]]:
    """The cryptic species pairs a JSON file lists (``{"cryptic_pairs": [[a, b], ...]}``, as the synthetic
    collection's ``collection.json``); none without a file."""
    if file is None:
        return []
    info = json.loads(Path(file).read_text())
    if not all(len(pair) == 2 for pair in info.get("cryptic_pairs", [None])):
        raise SystemExit(f"evaluate.cryptic_pairs: {file} needs a 'cryptic_pairs' list of species pairs")
    return [tuple(pair) for pair in info["cryptic_pairs"]]
