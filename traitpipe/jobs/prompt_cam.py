"""Prompt-CAM explain step for one shard: every head's map for the target class to Zarr,
and the ranked trait heads into the ``prompt_heads`` table."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from tqdm import tqdm

from traitpipe.jobs.images import ImageInputs, leave_out_unread, read_once, read_rows
from traitpipe.models.classes import explained_classes
from traitpipe.jobs.models import load_prompt_cam
from traitpipe.jobs.step import Step
from traitpipe.models.device import autocast, to_device
from traitpipe.store.cards import ModelCard
from traitpipe.store.maps import background_writes, keep_images, map_writer


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job prompt_cam --config RUN_CONFIG --images T --weights F --description F --classifier F
    --classifier-description F --maps Z --heads T --failures T``."""
    step = Step("prompt_cam", argv, paths=("images", "weights", "description", "classifier", "classifier_description",
                                           "maps", "heads", "failures"))
    args, config, device = step.args, step.config, step.device
    model, _ = load_prompt_cam(args.classifier, args.classifier_description, args.weights)
    model.to(device).eval()
    card = ModelCard.read(args.description)
    classes, heads = card.classes, model.num_heads
    grid = tuple(model.backbone.patch_embed.grid_size)
    rows, batch_size = read_rows(args.images), config["prompt_cam"]["batch_size"]
    batches, problems = read_once(ImageInputs(config, rows, card.input_size, card.mean, card.std),
                                  batch_size, config["loader"]["workers"], device)
    targets = explained_classes(rows["species"], classes, config["explain"]["target"])
    prov = step.record(precision=config["prompt_cam"]["precision"],
                       models={"prompt_cam": card.used()})
    attrs = {"provenance": prov, "method": "promptcam", "classes": classes, "input_size": card.input_size,
             "normalisation": {"mean": card.mean, "std": card.std},
             "target": config["explain"]["target"],
             "note": "raw last-block attention of the target class's prompt over the patches, one map per head; "
                     "the map covers the whole image resized to input_size"}
    records = []
    with map_writer(args.maps, rows["image_id"].tolist(),
                    {"cam": ((heads, *grid), "float16", ("head", "y", "x"))}, attrs) as group:
        with background_writes(group) as write:  # the write overlaps the next batch
            for index, batch in tqdm(batches(), total=math.ceil(len(rows) / batch_size), desc="promptcam", unit="batch",
                                     file=sys.stderr):
                start, batch = int(index[0]), to_device(batch, device)
                with torch.no_grad(), autocast(device, config["prompt_cam"]["precision"]):
                    target, predicted, maps, ranking, probability = model.explain(  # one pass through the backbone
                        batch, to_device(torch.from_numpy(targets[start:start + len(batch)]), device))
                write("cam", start, maps.float().cpu().numpy().astype(np.float16))
                for i, image_id in enumerate(rows["image_id"].iloc[start:start + len(batch)]):
                    for rank in range(heads):
                        records.append({"image_id": image_id, "class": int(target[i]),
                                        "species": classes[int(target[i])],
                                        "target_source": "true" if targets[start + i] >= 0 else "predicted",
                                        "rank": rank, "head": int(ranking[i, rank]),
                                        "probability": float(probability[i, rank]),
                                        "ranked": bool(predicted[i] == target[i])})
        read, records, failures = leave_out_unread(rows, problems, records)
        keep_images(group, read)
    step.write("prompt_heads", records, args.heads)
    step.write_failures(failures)
    step.finish(f"{read.sum()} images, {heads} heads ranked")
