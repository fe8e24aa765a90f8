"""Species summaries of one map product: the mean map per species on the canvas (dask over every shard's
store; ``summarize.scheduler`` names a distributed cluster, default local threads) and ``species_traits``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd

from traitpipe.jobs.step import Step
from traitpipe.store.maps import open_maps, write_maps
from traitpipe.store.tables import read_table_files
from traitpipe.traits.species import canvas_maps, pointed_parts, scheduler, species_means, summarized_heads


def shard_maps(maps_store: str, labels_store: str, heads: pd.DataFrame | None, canvas: int):
    """One shard's maps on the canvas (lazy) and their species, for the images that have a label map (and, for
    Prompt-CAM, rows in ``heads``: :func:`traitpipe.traits.species.summarized_heads`).

    Returns
    -------
    dask.array.Array, float32, shape (n, K, canvas, canvas)
    list of str, length n
        The images' ids.
    """
    maps, labels = open_maps(maps_store), open_maps(labels_store)
    ids = maps["image_id"][:].tolist()
    label_index = {image_id: j for j, image_id in enumerate(labels["image_id"][:].tolist())}
    summarized = None if heads is None else set(heads["image_id"])
    keep = [i for i, image_id in enumerate(ids) if image_id in label_index
            and (summarized is None or image_id in summarized)]
    rows = [label_index[ids[i]] for i in keep]
    n_maps = maps["cam"].shape[1]
    if heads is None:  # CAM alphas or INTR heads, in store order
        order = np.tile(np.arange(n_maps), (len(keep), 1))
    else:  # Prompt-CAM: position r holds the head ranked r for the image
        ranked = heads.sort_values("rank").groupby("image_id")["head"].apply(list)
        order = np.array([ranked[ids[i]] for i in keep], np.int64).reshape(len(keep), n_maps)
    raw = da.from_zarr(maps["cam"])[np.array(keep, np.int64)]
    placed = canvas_maps(raw.astype(np.float32), labels["canvas_transform"][:][rows], labels["image_size"][:][rows],
                         order, canvas)
    return placed, [ids[i] for i in keep]


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job summarize --config RUN_CONFIG --images T.. --maps Z.. --labels Z.. --cam-parts T..
    [--heads T..] --species-maps Z --species-traits T``.

    ``--maps`` and ``--labels`` list the shards' stores in the same order.
    """
    step = Step("summarize", argv, paths=("species_maps", "species_traits"),
                lists=("images", "maps", "labels", "cam_parts", "heads"), compute=False)
    args, config = step.args, step.config
    if len(args.maps) != len(args.labels):
        raise SystemExit(f"summarize: {len(args.maps)} map stores but {len(args.labels)} label stores")
    species_of = read_table_files(args.images, "images").drop_duplicates("image_id").set_index(
        "image_id")["species"]
    heads = summarized_heads(read_table_files(args.heads, "prompt_heads"), config["prompt_cam"]["misclassified"]) \
        if args.heads else None
    canvas = int(open_maps(args.labels[0]).attrs["canvas"]) if args.labels else config["segment"]["canvas"]
    first = open_maps(args.maps[0]).attrs if args.maps else {}
    step.record(models=first.get("provenance", {}).get("models", {}))
    stacks, species = [], []
    for maps_store, labels_store in zip(args.maps, args.labels):
        placed, ids = shard_maps(maps_store, labels_store, heads, canvas)
        stacks.append(placed)
        species += [species_of[image_id] for image_id in ids]
    with scheduler(config["summarize"]["scheduler"]):
        names, means, counts = species_means(da.concatenate(stacks) if stacks else da.zeros((0, 1, canvas, canvas)),
                                             species)
    method = first.get("method", "")
    positions = (("alpha", first["alphas"]) if "alphas" in first else ("head", first["heads"]) if "heads" in first
                 else ("rank", list(range(means.shape[1]))))
    write_maps(args.species_maps, names,
               {"mean": (means, (positions[0], "y", "x")), "images": (counts, (positions[0],))},
               {"provenance": step.provenance, "method": method, positions[0]: positions[1], "canvas": canvas,
                "note": "mean per species of the maps on the segmentation canvas, each map scaled to sum 1 first "
                        "(a distribution of its mass), over the images whose map has mass (images: how many); "
                        "Prompt-CAM's along the heads' ranks, INTR's along its heads"}, index="species")
    traits = pointed_parts(read_table_files(args.cam_parts, "cam_parts"))
    step.write("species_traits", traits, args.species_traits)
    step.finish(f"{method}: {len(names)} species, {len(species)} images")
