"""The one pass of a map job over its shard, shared by every kind of map product (traitpipe.products.MAP_KINDS).

Each batch of images is read once (:func:`traitpipe.jobs.images.read_once`), explained by the job's own function,
its maps written to the product's store in the background while the next batch computes, and its table rows
gathered; images that could not be read are left out of the store and the rows, and become ``failures`` rows.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from traitpipe.jobs.images import ImageInputs, leave_out_unread, read_once
from traitpipe.models.device import to_device
from traitpipe.store.maps import background_writes, keep_images, map_writer


def map_shard(config: dict, rows: pd.DataFrame, inputs: ImageInputs, maps: str, shape: Sequence[int],
              dims: Sequence[str], attrs: dict, explain: Callable[[int, torch.Tensor], tuple[np.ndarray, list[dict]]],
              *, batch_size: int, device: torch.device, desc: str) -> tuple[np.ndarray, list[dict], pd.DataFrame]:
    """Explain every image of a shard and write its maps.

    Parameters
    ----------
    config : dict
        The run config (``loader.workers``).
    rows : pandas.DataFrame
        The shard's N ``images`` rows.
    inputs : ImageInputs
        Their model inputs (with a ``size``).
    maps : str
        The product's map store, written whole or not at all.
    shape, dims : sequence
        One image's maps: their shape (say (alphas, h, w)) and dimension names (``("alpha", "y", "x")``).
    attrs : dict
        The store's attributes (provenance included).
    explain : callable
        ``explain(start, batch)``: the maps of images ``start ..`` (batch float32 (B, 3, S, S) on ``device``), as
        an array (B, *shape), and their table rows (dicts with ``image_id``).
    batch_size, device, desc
        Batch size, where the batch goes, the progress bar's name.

    Returns
    -------
    read : numpy.ndarray of bool, shape (N,)
    records : list of dict
        The rows of the images read.
    failures : pandas.DataFrame
        One row per image not read, with its reason.
    """
    batches, problems = read_once(inputs, batch_size, config["loader"]["workers"], device)
    records = []
    with map_writer(maps, rows["image_id"].tolist(), {"cam": (tuple(shape), "float16", tuple(dims))}, attrs) as group:
        with background_writes(group) as write:  # the write overlaps the next batch
            for index, batch in tqdm(batches(), total=math.ceil(len(rows) / batch_size), desc=desc, unit="batch",
                                     file=sys.stderr):
                start = int(index[0])
                values, batch_records = explain(start, to_device(batch, device))
                write("cam", start, np.asarray(values, dtype=np.float16))
                records += batch_records
        read, records, failures = leave_out_unread(rows, problems, records)
        keep_images(group, read)
    return read, records, failures
