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

from traitpipe.explain.faithfulness import DROP_COLUMNS
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


def cams_records(image_ids: Sequence[str], true: np.ndarray, target: torch.Tensor, predicted: torch.Tensor,
                 similar: torch.Tensor, drop, classes: Sequence[str], fraction: float) -> list[dict]:
    """``cams`` rows of a batch of one-map-per-image products (``alpha`` null, nothing compared).

    Parameters
    ----------
    image_ids : sequence of str, length B
    true : numpy.ndarray of bool, shape (B,)
        Whether each target is the image's true class (else the predicted one).
    target, predicted, similar : torch.Tensor, int64, shape (B,)
        The explained class, the predicted one, the class most similar to the target.
    drop : traitpipe.explain.faithfulness.ConfidenceDrop
        The faithfulness of each image's map.
    classes : sequence of str
        The species of each class.
    fraction : float
        The share of pixels the faithfulness masks.
    """
    values = {name: getattr(drop, name).cpu().tolist() for name in DROP_COLUMNS}
    records = []
    for i, image_id in enumerate(image_ids):
        t, p, d = int(target[i]), int(predicted[i]), int(similar[i])
        records.append({"image_id": image_id, "alpha": None, "target": t, "target_species": classes[t],
                        "target_source": "true" if true[i] else "predicted", "predicted": p,
                        "predicted_species": classes[p], "compared": None, "similar_class": d,
                        "similar_species": classes[d], "mask_fraction": fraction,
                        **{name: column[i] for name, column in values.items()}})
    return records
