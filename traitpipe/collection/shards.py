"""Species-contiguous shards: the unit of work of every workflow step.

Images are ordered by (species, sort key) and cut into shards of at most
``shard_size`` images. A species that fits in one shard is never split; a larger
one is cut into full shards. The plan depends only on how many rows each species
has, so the shard list is known when the workflow is parsed, before any image is
read; which image lands in which shard depends on its content hash, so it does not
change when manifest rows are reordered.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: One piece of a shard: (species, start, stop), a slice of that species' sorted rows.
Piece = tuple[str, int, int]


def shard_name(index: int) -> str:
    """Name of shard ``index``: zero-padded, so names sort like indices."""
    return f"{index:05d}"


def plan_shards(species_counts: Mapping[str, int], shard_size: int) -> list[list[Piece]]:
    """Cut species into shards.

    Parameters
    ----------
    species_counts : mapping of str to int
        Number of rows of every species.
    shard_size : int
        Most images in one shard, >= 1.

    Returns
    -------
    list of list of Piece
        One list of pieces per shard, in shard order; species in sorted order.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    shards: list[list[Piece]] = []
    current: list[Piece] = []
    fill = 0
    for species in sorted(species_counts):
        count = int(species_counts[species])
        if fill and fill + count > shard_size:  # does not fit in what is left: start a new shard
            shards.append(current)
            current, fill = [], 0
        start = 0
        while count - start > shard_size - fill:  # larger than a shard: fill whole shards
            stop = start + shard_size - fill
            shards.append(current + [(species, start, stop)])
            current, fill, start = [], 0, stop
        if count > start:
            current.append((species, start, count))
            fill += count - start
    if current:
        shards.append(current)
    return shards


def shard_names(species: pd.Series, shard_size: int) -> list[str]:
    """Names of the shards that :func:`assign_shards` will fill, from the species column alone."""
    return [shard_name(i) for i in range(len(plan_shards(species.value_counts().to_dict(), shard_size)))]


def shard_species(species: pd.Series, shard_size: int) -> dict[str, list[str]]:
    """The species of every shard :func:`assign_shards` will fill, from the species column alone.

    Examples
    --------
    >>> shard_species(pd.Series(["b", "a", "a", "c"]), 2)
    {'00000': ['a'], '00001': ['b', 'c']}
    """
    plan = plan_shards(species.value_counts().to_dict(), shard_size)
    return {shard_name(i): sorted({piece[0] for piece in pieces}) for i, pieces in enumerate(plan)}


def assign_shards(species: pd.Series, sort_key: pd.Series, shard_size: int) -> np.ndarray:
    """Shard of every row.

    Parameters
    ----------
    species : pandas.Series of str, length N
    sort_key : pandas.Series of str, length N
        Order of the rows inside a species (the image id).
    shard_size : int

    Returns
    -------
    numpy.ndarray of object (str), shape (N,)
        Shard name per row, in the input's row order.
    """
    order = pd.DataFrame({"species": species.to_numpy(), "key": sort_key.to_numpy()})
    order = order.sort_values(["species", "key"], kind="stable")
    plan = plan_shards(order["species"].value_counts().to_dict(), shard_size)
    names = np.empty(len(order), dtype=object)
    offset = {name: start for name, start in
              zip(*np.unique(order["species"].to_numpy(), return_index=True))}
    for index, pieces in enumerate(plan):
        for name, start, stop in pieces:
            names[offset[name] + start: offset[name] + stop] = shard_name(index)
    result = np.empty(len(order), dtype=object)
    result[order.index.to_numpy()] = names
    return result
