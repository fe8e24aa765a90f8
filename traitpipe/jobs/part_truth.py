"""SST against the truth, for one shard: each image's stored part masks (each part's own, which may overlap)
against its true part labels (``collection.columns.parts_truth``) placed on the same canvas, pixel counts per
part into ``part_truth``.

Both are compared at the canvas's resolution, where the masks are stored: a perfect prediction scores 1
whatever the canvas size."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from tqdm import tqdm

from traitpipe.collection.images import ImageError
from traitpipe.jobs.images import failure_rows, read_rows
from traitpipe.jobs.masks import read_truth
from traitpipe.jobs.step import Step
from traitpipe.segment.parts import to_canvas
from traitpipe.store.maps import open_maps
from traitpipe.traits.overlap import part_masks, part_overlap


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job part_truth --config RUN_CONFIG --images T --labels Z --parts T --part-truth T --failures T``."""
    step = Step("part_truth", argv, paths=("images", "labels", "parts", "part_truth", "failures"), compute=False)
    args = step.args
    rows = read_rows(args.images).set_index("image_id")
    labels = open_maps(args.labels)
    names = {int(k): v for k, v in labels.attrs["parts"].items()}
    frames = pd.read_parquet(args.parts).drop_duplicates("image_id").set_index("image_id")["frame_index"]
    step.record(models=labels.attrs["provenance"].get("models", {}))
    masks, mask_parts, sizes = labels["part_masks"], labels.attrs["mask_parts"], labels["image_size"][:]
    records, failed = [], []
    for j, image_id in enumerate(tqdm(labels["image_id"][:].tolist(), desc="part truth", unit="img",
                                      file=sys.stderr)):
        file = rows.at[image_id, "parts_truth"]
        if not file:
            continue
        size = (int(sizes[j][0]), int(sizes[j][1]))
        try:
            truth = read_truth(file, size, "parts")
        except ImageError as error:
            failed.append(failure_rows(rows.loc[[image_id]].reset_index(), str(error)))
            continue
        truth_on_canvas, _ = to_canvas(truth.astype(np.uint8), masks.shape[-1])
        inter, union = part_overlap(part_masks(masks[j], mask_parts, list(names)), truth_on_canvas, list(names))
        for p, (part_id, name) in enumerate(names.items()):
            records.append({"image_id": image_id, "species": rows.at[image_id, "species"],
                            "frame_index": int(frames[image_id]), "part_id": part_id, "part": name,
                            "intersection_pixels": int(inter[p]), "union_pixels": int(union[p]),
                            "truth_pixels": int((truth_on_canvas == part_id).sum()),
                            "iou": inter[p] / union[p] if union[p] else np.nan})
    step.write("part_truth", records, args.part_truth)
    step.write_failures(pd.concat(failed, ignore_index=True) if failed else [])
    step.finish(f"{len(records) // max(1, len(names))} images scored against their true parts")
