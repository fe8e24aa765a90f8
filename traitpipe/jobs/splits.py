"""Which images train and which are held out, and the subsets the evaluation scores apart: held-out specimens,
the species a SAM 2 trained on, the cryptic pairs, the taxonomy ranks of each species."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from traitpipe.jobs.images import read_rows, readable_inputs
from traitpipe.store.cards import ModelCard


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


def held_out(rows: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Which ``images`` rows are held out: whole specimens, about ``val_fraction`` of each species'.

    An image without a specimen id is its own specimen. Returns bool (len(rows),).
    """
    from traitpipe.models.training import split_by_specimen

    specimens = rows["specimen_id"].fillna("").to_numpy(dtype=str)
    specimens = np.where(specimens == "", rows["image_id"].to_numpy(dtype=str), specimens)
    species = rows["species"].astype("category").cat.codes.to_numpy()
    return split_by_specimen(specimens, species, val_fraction, seed)


def accuracy_rows(method: str, correct: np.ndarray, is_val: np.ndarray, species: np.ndarray | None = None,
                  pairs: Sequence[tuple[str, str]] = ()) -> tuple[dict[str, float], list[dict]]:
    """Top-1 accuracy on the training and held-out images: {"train": a, "val": a} (NaN where a subset is
    empty) and the ``evaluation`` records; with each image's species and the cryptic ``pairs``, also
    ``pair_accuracy``: the held-out accuracy over the images of each pair's two species (subset "<a> | <b>"),
    whether the model tells the sisters apart.

    Parameters
    ----------
    method : str
        The ``evaluation.method`` value.
    correct, is_val : numpy.ndarray of bool, shape (N,)
        Whether each image was classified right, and whether it is held out.
    species : numpy.ndarray of str, shape (N,), optional
    pairs : sequence of (str, str)

    Examples
    --------
    >>> correct, is_val = np.array([True, False, True, True]), np.array([True, True, True, False])
    >>> _, rows = accuracy_rows("m", correct, is_val, np.array(["a", "b", "c", "a"]), [("a", "b")])
    >>> [(r["metric"], r["subset"], r["value"], r["n"]) for r in rows]
    [('top1_accuracy', 'train', 1.0, 1), ('top1_accuracy', 'val', 0.6666666666666666, 3), ('pair_accuracy', 'a | b', 0.5, 2)]
    """
    accuracy, records = {}, []
    for subset, chosen in (("train", ~is_val), ("val", is_val)):
        accuracy[subset] = float(correct[chosen].mean()) if chosen.any() else float("nan")
        records.append({"method": method, "metric": "top1_accuracy", "subset": subset, "level": None,
                        "value": accuracy[subset], "n": int(chosen.sum())})
    for a, b in pairs:
        chosen = is_val & np.isin(species, [a, b])
        if chosen.any():
            records.append({"method": method, "metric": "pair_accuracy", "subset": f"{a} | {b}", "level": None,
                            "value": float(correct[chosen].mean()), "n": int(chosen.sum())})
    return accuracy, records


def sam2_split(description: str | None) -> dict[str, set[str]]:
    """The species a SAM 2 trained here trained on and held out (``models/sam2_trained.json``), as evaluation
    subsets ``trained`` and ``held_out``; none without a description."""
    if description is None:
        return {}
    trained = ModelCard.read(description).extra
    return {"trained": set(trained["species"]), "held_out": set(trained["held_out"])}


def trait_parts(file: str | None) -> dict[str, list[str]]:
    """Each species' trait part(s) a JSON file names (``{"trait_parts": {species: [part, ...]}}``, as the
    synthetic collection's ``collection.json``); none without a file or the key."""
    if file is None:
        return {}
    return {name: list(parts) for name, parts in json.loads(Path(file).read_text()).get("trait_parts", {}).items()}


def cryptic_pairs(file: str | None) -> list[tuple[str, str]]:
    """The cryptic species pairs a JSON file lists (``{"cryptic_pairs": [[a, b], ...]}``, as the synthetic
    collection's ``collection.json``); none without a file."""
    if file is None:
        return []
    info = json.loads(Path(file).read_text())
    if not all(len(pair) == 2 for pair in info.get("cryptic_pairs", [None])):
        raise SystemExit(f"evaluate.cryptic_pairs: {file} needs a 'cryptic_pairs' list of species pairs")
    return [tuple(pair) for pair in info["cryptic_pairs"]]


def species_ranks(config: dict, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The taxonomy rank columns (``collection.columns.ranks``) of ``images`` rows, one row per species; None without."""
    ranks = list(config["collection"]["columns"]["ranks"])
    return rows.drop_duplicates("species").set_index("species")[ranks] if ranks else None
