"""Species-contiguous shards: the unit of work of every workflow step.

Images are ordered by (species, sort key) and cut into shards of at most
``shard_size`` images. A species that fits in one shard is never split; a larger
one is cut into full shards. The plan depends only on how many rows each species
has, so the shard list is known when the workflow is parsed, before any image is
read; which image lands in which shard depends on its content hash, so it does not
change when manifest rows are reordered. Each shard's ingest reads only the rows of its
own species (:func:`shard_rows`), so replacing one image reruns only its shards.
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


#: ``shard_size: auto``: the jobs a run plans, at most: one per this many images, between the two bounds below
#: (Snakemake plans about 5,000 jobs a minute).
AUTO_IMAGES_PER_JOB = 50
AUTO_JOBS = (1000, 4000)
#: ``shard_size: auto``: the smallest size it picks, and the step its sizes are multiples of (a collection that
#: grows a little keeps its shards).
AUTO_STEP = 512


def auto_shard_size(species_counts: Mapping[str, int], jobs_per_shard: int, jobs_once: int = 0,
                    step: int = AUTO_STEP) -> int:
    """The smallest multiple of ``step`` whose shards make a run of at most one job per 50 images (between
    1,000 and 4,000 jobs: :data:`AUTO_JOBS`).

    Parameters
    ----------
    species_counts : mapping of str to int
        Number of rows of every species.
    jobs_per_shard : int
        The jobs each shard makes (:meth:`traitpipe.plan.Plan.per_shard_stages`), >= 1.
    jobs_once : int
        The jobs a run makes once (training, summaries, the report).
    step : int

    Returns
    -------
    int
        At least ``step``; it may leave more jobs than the budget only where a size of the whole collection
        does (one shard).

    Examples
    --------
    >>> counts = {f"s{k}": 100 for k in range(10_000)}  # a million images, 100 per species
    >>> size = auto_shard_size(counts, 15, 20)
    >>> size, len(plan_shards(counts, size)) * 15 + 20 <= 4000
    (4096, True)
    >>> auto_shard_size({"a": 40, "b": 60}, 15, 20)  # a small collection: one shard
    512
    """
    total = sum(species_counts.values())
    budget = min(max(total // AUTO_IMAGES_PER_JOB, AUTO_JOBS[0]), AUTO_JOBS[1]) - jobs_once
    size = max(step, -(-total * jobs_per_shard // max(budget, 1) // step) * step)
    while len(plan_shards(species_counts, size)) * jobs_per_shard > budget and size < total:
        size += step  # species that do not pack: a few more images per shard
    return size


def shard_names(species: pd.Series, shard_size: int) -> list[str]:
    """Names of the shards :func:`shard_rows` plans, from the species column alone."""
    return [shard_name(i) for i in range(len(plan_shards(species.value_counts().to_dict(), shard_size)))]


def shard_rows(manifest: pd.DataFrame, shard_size: int) -> dict[str, pd.DataFrame]:
    """The manifest rows each shard's ingest reads, planned from the species column alone.

    A shard reads every row of each species it holds: which rows of a species larger than a
    shard land in which of its shards depends on the images' content hashes, known only once
    they are read. The rows carry the slice of their species' sorted rows the shard keeps.

    Parameters
    ----------
    manifest : pandas.DataFrame
        From ``read_manifest`` (``species`` and any other columns), N rows.
    shard_size : int

    Returns
    -------
    dict of str to pandas.DataFrame
        Shard name -> its rows (the manifest's columns plus ``label`` (int32, the species' index
        in the collection's sorted species), ``shard`` (str), ``piece_start`` and ``piece_stop``
        (int64: the shard keeps ranks [start, stop) of its species' rows sorted by key, see
        :func:`in_piece`)), in shard order.

    Examples
    --------
    >>> rows = shard_rows(pd.DataFrame({"species": ["b", "a", "a", "b", "b"]}), 2)
    >>> {name: list(zip(r["species"], r["piece_start"], r["piece_stop"])) for name, r in rows.items()}
    {'00000': [('a', 0, 2), ('a', 0, 2)], '00001': [('b', 0, 2), ('b', 0, 2), ('b', 0, 2)], \
'00002': [('b', 2, 3), ('b', 2, 3), ('b', 2, 3)]}
    """
    labels = {name: i for i, name in enumerate(sorted(manifest["species"].unique()))}
    manifest = manifest.assign(label=manifest["species"].map(labels).astype(np.int32))
    of_species = dict(iter(manifest.groupby("species", sort=False)))
    plan = plan_shards(manifest["species"].value_counts().to_dict(), shard_size)
    return {shard_name(i): pd.concat([of_species[species].assign(shard=shard_name(i), piece_start=start,
                                                                 piece_stop=stop)
                                      for species, start, stop in pieces], ignore_index=True)
            for i, pieces in enumerate(plan)}


def in_piece(rows: pd.DataFrame, sort_key: pd.Series) -> np.ndarray:
    """Which rows their shard keeps: rank within (shard, species) by ``sort_key`` in [piece_start, piece_stop).

    Parameters
    ----------
    rows : pandas.DataFrame, N rows
        From :func:`shard_rows` (one shard's or several shards' concatenated).
    sort_key : pandas.Series of str, length N
        Order of the rows inside a species (the image id), so that the split does not depend on row order.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)

    Examples
    --------
    >>> rows = shard_rows(pd.DataFrame({"species": ["a", "a", "a"]}), 2)
    >>> both = pd.concat(rows.values(), ignore_index=True)
    >>> both[in_piece(both, pd.Series(["z", "x", "y"] * 2))]["shard"].tolist()  # x, y in 00000; z in 00001
    ['00000', '00000', '00001']
    """
    rank = pd.DataFrame({"shard": rows["shard"].to_numpy(), "species": rows["species"].to_numpy(),
                         "key": sort_key.to_numpy()}).groupby(["shard", "species"])["key"].rank(method="first") - 1
    rank = rank.to_numpy()
    return (rank >= rows["piece_start"].to_numpy()) & (rank < rows["piece_stop"].to_numpy())
