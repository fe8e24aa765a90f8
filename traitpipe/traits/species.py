"""Per-species summaries of the maps: mean maps on the canvas (``dask.array`` over the per-shard Zarr
stores, a chunk per image, so the collection never sits in memory) and the part each species' maps point at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import pandas as pd

from traitpipe.traits.maps import place_maps


def _place_block(raw: np.ndarray, meta: np.ndarray, canvas: int) -> np.ndarray:
    """One chunk of images: (n, K, h, w) raw maps, (n, 5 + K) rows of (scale, oy, ox, H, W, order...)
    -> (n, K, canvas, canvas) maps on the canvas, each reordered by ``order`` and scaled to sum 1."""
    out = np.zeros((len(raw), raw.shape[1], canvas, canvas), np.float32)
    for i, (image, row) in enumerate(zip(raw, meta)):
        order = row[5:].astype(int)
        placed = place_maps(image[order], row[:3], (int(row[3]), int(row[4])), canvas)
        total = placed.sum(axis=(1, 2), keepdims=True)
        out[i] = np.divide(placed, total, out=np.zeros_like(placed), where=total > 0)
    return out


def summarized_heads(heads: pd.DataFrame, misclassified: str = "leave_out") -> pd.DataFrame:
    """The ``prompt_heads`` rows the trait summaries read: by default only those of images whose heads are
    ranked (the model predicts the class explained, as the Prompt-CAM authors require before ranking).

    Parameters
    ----------
    heads : pandas.DataFrame
        ``prompt_heads`` rows (image_id, head, rank, ranked).
    misclassified : {"leave_out", "include"}
        ``prompt_cam.misclassified``.

    Examples
    --------
    >>> heads = pd.DataFrame({"image_id": ["a", "a", "b", "b"], "head": [1, 0, 0, 1], "rank": [0, 1, 0, 1],
    ...                       "ranked": [True, True, False, False]})
    >>> summarized_heads(heads)["image_id"].tolist(), len(summarized_heads(heads, "include"))
    (['a', 'a'], 4)
    """
    return heads if misclassified == "include" else heads[heads["ranked"]]


def canvas_maps(raw: da.Array, transforms: np.ndarray, sizes: np.ndarray, order: np.ndarray, canvas: int) -> da.Array:
    """Lazy maps of many images on the segmentation canvas, each map a distribution (sums to 1).

    Parameters
    ----------
    raw : dask.array.Array, shape (N, K, h, w)
        Raw maps, one chunk per image along N (``dask.array.from_zarr`` of a map store's ``cam``).
    transforms : numpy.ndarray, float, shape (N, 3)
        Each image's canvas transform (scale, offset_y, offset_x).
    sizes : numpy.ndarray, int, shape (N, 2)
        Each image's (H, W).
    order : numpy.ndarray, int, shape (N, K)
        Which map goes to each output position (identity for CAM alphas; Prompt-CAM's heads by rank).
    canvas : int

    Returns
    -------
    dask.array.Array, float32, shape (N, K, canvas, canvas)
        A map with no mass stays all zero.
    """
    meta = np.concatenate([transforms, sizes, order], axis=1).astype(np.float64)
    meta = da.from_array(meta, chunks=(raw.chunks[0], meta.shape[1]))
    raw = raw.rechunk({1: -1, 2: -1, 3: -1})
    return da.blockwise(_place_block, "ikyx", raw, "ikhw", meta, "im", new_axes={"y": canvas, "x": canvas},
                        concatenate=True, dtype=np.float32, canvas=canvas)


def species_means(maps: da.Array, species: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean map per species, over the images whose map has mass, computed in one pass of the scheduler in use.

    Parameters
    ----------
    maps : dask.array.Array, shape (N, K, C, C)
        Maps scaled to sum 1 (all zero: a map with no mass, left out of its species' mean).
    species : sequence of str, length N

    Returns
    -------
    names : list of str
        The species, sorted.
    means : numpy.ndarray, float32, shape (S, K, C, C)
        Each sums to 1, or is all zero where no image of the species has a map with mass.
    counts : numpy.ndarray, int64, shape (S, K)
        The images each mean is over.
    """
    species = np.asarray(species, dtype=str)
    names = sorted(set(species.tolist()))
    lazy = []
    for name in names:
        chosen = maps[np.flatnonzero(species == name)]
        lazy += [chosen.sum(axis=0), (chosen.sum(axis=(2, 3)) > 0).sum(axis=0)]
    computed = dask.compute(*lazy)
    if not names:
        return names, np.zeros((0, *maps.shape[1:]), np.float32), np.zeros((0, maps.shape[1]), np.int64)
    sums, counts = np.stack(computed[0::2]), np.stack(computed[1::2]).astype(np.int64)
    return names, (sums / np.maximum(counts, 1)[:, :, None, None]).astype(np.float32), counts


@contextlib.contextmanager
def scheduler(address: str | None):
    """Run dask computations inside on a distributed cluster (a scheduler address such as
    ``tcp://host:8786``) or, with None, on local threads."""
    if address is None:
        with dask.config.set(scheduler="threads"):
            yield
        return
    from distributed import Client

    with Client(address, set_as_default=True, timeout="30s"):
        yield


def pointed_parts(cam_parts: pd.DataFrame) -> pd.DataFrame:
    """Per species and map (alpha; Prompt-CAM head rank; INTR head), the part its maps point at most.

    The part holding the map's peak in most of the species' images; ``consistency`` is that share of
    images, ``mass_share`` and ``area_share`` the part's mean shares. Ties (and species whose peaks all
    fall on the background) go to the part with the larger mean mass share.

    Parameters
    ----------
    cam_parts : pandas.DataFrame
        ``cam_parts`` rows (image_id, species, alpha, head, rank, part_id, part, mass_share, peak_in_part,
        area_share). A ranked head (Prompt-CAM's) is summarised by its rank, an unranked one (INTR's) by its
        number.

    Returns
    -------
    pandas.DataFrame
        ``species_traits`` columns.

    Examples
    --------
    >>> rows = pd.DataFrame({"image_id": list("aabbcc"), "species": "s", "alpha": np.nan, "head": np.nan,
    ...     "rank": np.nan,
    ...     "part_id": [1, 2] * 3, "part": ["head", "wing"] * 3, "mass_share": [0.6, 0.3, 0.2, 0.7, 0.1, 0.8],
    ...     "peak_in_part": [True, False, False, True, False, True], "area_share": [0.2, 0.3] * 3})
    >>> pointed_parts(rows)[["species", "part", "consistency", "n"]].to_dict("records")
    [{'species': 's', 'part': 'wing', 'consistency': 0.6666666666666666, 'n': 3}]
    """
    keys = ["species", "alpha", "rank", "head"]
    cam_parts = cam_parts.assign(head=cam_parts["head"].where(cam_parts["rank"].isna()))
    per_part = cam_parts.groupby([*keys, "part_id", "part"], dropna=False, sort=True).agg(
        peaks=("peak_in_part", "sum"), mass_share=("mass_share", "mean"), area_share=("area_share", "mean"),
        n=("image_id", "nunique")).reset_index()
    per_part["consistency"] = per_part["peaks"] / per_part["n"]
    best = per_part.sort_values([*keys, "consistency", "mass_share"], ascending=[True] * 4 + [False, False],
                                na_position="last", kind="stable")
    return best.drop_duplicates(keys)[[*keys, "part_id", "part", "consistency", "mass_share", "area_share",
                                       "n"]].reset_index(drop=True).assign(delta_margin=np.nan)


def effect_parts(effects: pd.DataFrame) -> pd.DataFrame:
    """Per species, the part the model's own evidence names: the one whose removal lowers the margin to the
    closest class most, on average over the species' images (``part_effects``).

    ``consistency`` is the share of the species' images whose largest margin drop is at that part; a part an
    image does not have is left out of its mean.

    Parameters
    ----------
    effects : pandas.DataFrame
        ``part_effects`` rows (image_id, species, part_id, part, area_share, delta_margin).

    Returns
    -------
    pandas.DataFrame
        ``species_traits`` columns (``alpha``, ``rank``, ``head`` and ``mass_share`` null).

    Examples
    --------
    >>> rows = pd.DataFrame({"image_id": list("aabb"), "species": "s", "part_id": [1, 2] * 2,
    ...     "part": ["head", "wing"] * 2, "area_share": 0.1, "delta_margin": [-0.1, -0.5, -0.3, -0.2]})
    >>> effect_parts(rows)[["species", "part", "consistency", "delta_margin", "n"]].to_dict("records")
    [{'species': 's', 'part': 'wing', 'consistency': 0.5, 'delta_margin': -0.35, 'n': 2}]
    """
    columns = ["species", "alpha", "rank", "head", "part_id", "part", "consistency", "mass_share", "area_share", "n",
               "delta_margin"]
    present = effects[effects["delta_margin"].notna()].reset_index(drop=True)
    if present.empty:  # no image had a part to remove (SST found none): no answer, not an error
        return pd.DataFrame(columns=columns)
    present["first"] = False
    present.loc[present.groupby("image_id")["delta_margin"].idxmin().to_numpy(), "first"] = True
    per_part = present.groupby(["species", "part_id", "part"], sort=True).agg(
        delta_margin=("delta_margin", "mean"), firsts=("first", "sum"), area_share=("area_share", "mean"),
        n=("image_id", "nunique")).reset_index()
    images = present.groupby("species")["image_id"].nunique()
    per_part["consistency"] = per_part["firsts"] / per_part["species"].map(images)
    per_part["n"] = per_part["species"].map(images)
    best = per_part.sort_values(["species", "delta_margin"], kind="stable").drop_duplicates("species")
    return best.assign(alpha=np.nan, rank=None, head=None, mass_share=np.nan)[columns].reset_index(drop=True)
