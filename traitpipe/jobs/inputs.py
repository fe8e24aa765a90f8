"""Model inputs streamed from the collection: a Dataset over ``images`` rows and the pass that finds the unreadable.

A training job holds labels and indices, never pixels: :class:`ImageInputs` reads, checks, resizes and
normalises one image per item, in the DataLoader workers of :class:`traitpipe.models.batches.Batches`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from traitpipe.collection.images import ImageError, read_image, read_order
from traitpipe.jobs.common import image_files
from traitpipe.models.batches import Batches
from traitpipe.models.transforms import to_batch

#: Images checked per DataLoader batch in :func:`readable`.
CHECK_BATCH = 64


class ImageInputs(Dataset):
    """The images of some ``images`` rows as model inputs. Item ``i``: float32 (3, size, size).

    Each image is read through the shared reader, checked to be the bytes ingest read (its ``image_id``),
    resized (bilinear, antialiased) and normalised, as :func:`traitpipe.models.transforms.to_batch`.

    Parameters
    ----------
    config : dict
        The run config: ``collection.root`` and ``collection.max_pixels`` are read.
    rows : pandas.DataFrame
        ``images`` rows (``path``, ``image_id``).
    size : int
        Side of the square model input.
    mean, std : sequence of 3 floats
        Per-channel normalisation in [0, 1] units.
    """

    def __init__(self, config: dict, rows: pd.DataFrame, size: int, mean, std):
        self.files = image_files(config, rows)
        self.ids = rows["image_id"].tolist()
        self.max_pixels = config["collection"]["max_pixels"]
        self.size, self.mean, self.std = size, list(mean), list(std)

    def __len__(self) -> int:
        return len(self.files)

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as read: uint8 (H, W, 3); :class:`ImageError` when it cannot be read or changed."""
        return read_image(self.files[i], max_pixels=self.max_pixels, expected_id=self.ids[i])

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_batch([self.pixels(i)], self.size, self.mean, self.std)[0]


class _Problems(Dataset):
    """Item ``i``: why image ``i`` of some inputs cannot be read ("" when it can)."""

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
    """Read every image of ``inputs`` once, in DataLoader workers, keeping none.

    Returns
    -------
    numpy.ndarray of object (str), shape (N,)
        Why each image cannot be read, "" for the readable ones.
    """
    problems = np.full(len(inputs), "", dtype=object)
    order = torch.tensor(read_order(inputs.files), dtype=torch.long)  # Parquet-stored images: row groups in turn
    for index, reasons in Batches(_Problems(inputs), CHECK_BATCH, workers)(order):
        problems[index.numpy()] = reasons
    return problems
