"""Where one map product points, for one shard: ``cam_parts`` (every map against the SST parts, on the
canvas) and, when the collection has trait truth masks, ``map_truth`` (every map against the true trait,
at the image's size).

A CAM store holds one map per alpha; Prompt-CAM's one per head, which the ``prompt_heads`` table ranks;
INTR's one per head, unranked (the authors read each head as one attribute).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from tqdm import tqdm

from traitpipe.collection.images import ImageError
from traitpipe.jobs.images import failure_rows, read_rows
from traitpipe.jobs.masks import read_truth
from traitpipe.jobs.step import Step
from traitpipe.store.maps import open_maps
from traitpipe.traits.maps import mask_scores, place_maps, resize_maps
from traitpipe.traits.species import summarized_heads


def map_keys(group, heads: pd.DataFrame | None) -> list[list[dict]]:
    """The key columns (alpha, head, rank) of each image's maps in a store, image by image.

    Parameters
    ----------
    group : zarr.Group
        A CAM store (maps along ``alpha``), Prompt-CAM's or INTR's (maps along ``head``).
    heads : pandas.DataFrame or None
        Prompt-CAM's ``prompt_heads`` rows (image_id, head, rank) of the images to summarise (an image without
        rows gets no keys: :func:`traitpipe.traits.species.summarized_heads`); None for a CAM or INTR store.
    """
    ids = group["image_id"][:].tolist()
    if heads is None:
        keys = [{"alpha": alpha, "head": None, "rank": None} for alpha in group.attrs["alphas"]] \
            if "alphas" in group.attrs else [{"alpha": None, "head": h, "rank": None} for h in group.attrs["heads"]]
        return [keys] * len(ids)
    rank = {(row.image_id, row.head): row.rank for row in heads.itertuples()}
    n_heads = group["cam"].shape[1]
    return [[{"alpha": None, "head": h, "rank": rank[(image_id, h)]} for h in range(n_heads)]
            if (image_id, 0) in rank else [] for image_id in ids]


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job cam_parts --config RUN_CONFIG --images T --labels Z --maps Z [--heads T] --cam-parts T
    [--map-truth T] --failures T``."""
    step = Step("cam_parts", argv, paths=("images", "labels", "maps", "cam_parts", "failures"),
                optional=("heads", "map_truth"), compute=False)
    args = step.args
    rows = read_rows(args.images).set_index("image_id")
    maps, labels = open_maps(args.maps), open_maps(args.labels)
    heads = summarized_heads(pd.read_parquet(args.heads), step.config["prompt_cam"]["misclassified"]) \
        if args.heads else None
    keys = map_keys(maps, heads)
    ids = maps["image_id"][:].tolist()
    raw = maps["cam"][:].astype(np.float32)
    label_index = {image_id: i for i, image_id in enumerate(labels["image_id"][:].tolist())}
    placed, transforms, sizes = labels["part_labels"][:], labels["canvas_transform"][:], labels["image_size"][:]
    parts = {int(k): v for k, v in labels.attrs["parts"].items()}
    canvas = int(labels.attrs["canvas"])
    step.record(models=maps.attrs["provenance"].get("models", {}))

    part_rows, truth_rows, failed = [], [], []
    for i, image_id in enumerate(tqdm(ids, desc=f"{maps.attrs['method']} parts", unit="img", file=sys.stderr)):
        species = rows.at[image_id, "species"]
        if image_id in label_index:  # an image SST could not segment has no parts (its failure is segment's)
            j = label_index[image_id]
            on_canvas = place_maps(raw[i], transforms[j], sizes[j], canvas)
            masks = np.stack([placed[j] == p for p in parts])
            scale = float(transforms[j][0])
            region = max(1, round(int(sizes[j][0]) * scale)) * max(1, round(int(sizes[j][1]) * scale))
            mass, peak = mask_scores(on_canvas, masks)
            for k, key in enumerate(keys[i]):
                for p, (part_id, name) in enumerate(parts.items()):
                    part_rows.append({"image_id": image_id, "species": species, **key, "part_id": part_id,
                                      "part": name, "mass_share": mass[k, p], "peak_in_part": bool(peak[k, p]),
                                      "area_share": masks[p].sum() / region})
        if args.map_truth and rows.at[image_id, "trait_truth"]:
            size = (int(rows.at[image_id, "height"]), int(rows.at[image_id, "width"]))
            try:
                trait = read_truth(rows.at[image_id, "trait_truth"], size, "trait") > 0
            except ImageError as error:
                failed.append(failure_rows(rows.loc[[image_id]].reset_index(), str(error)))
                continue
            mass, peak = mask_scores(resize_maps(raw[i], size), trait[None])
            truth_rows += [{"image_id": image_id, "species": species, **key, "trait_energy": mass[k, 0],
                            "trait_pointing": bool(peak[k, 0]), "trait_area": trait.mean()}
                           for k, key in enumerate(keys[i])]
    step.write("cam_parts", part_rows, args.cam_parts)
    if args.map_truth:
        step.write("map_truth", truth_rows, args.map_truth)
    step.write_failures(pd.concat(failed, ignore_index=True) if failed else [])
    step.finish(f"{maps.attrs['method']}: {len(ids)} images, {len(part_rows)} part rows, {len(truth_rows)} truth rows")
