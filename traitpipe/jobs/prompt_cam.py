"""Prompt-CAM explain step for one shard: every head's map for the target class to Zarr,
and the ranked trait heads into the ``prompt_heads`` table."""

from __future__ import annotations

import torch

from traitpipe.jobs.images import ImageInputs, read_rows
from traitpipe.jobs.map_pass import map_shard
from traitpipe.models.classes import explained_classes
from traitpipe.jobs.models import load_prompt_cam
from traitpipe.jobs.step import Step
from traitpipe.models.device import autocast, to_device
from traitpipe.store.cards import ModelCard


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
    targets = explained_classes(rows["species"], classes, config["explain"]["target"])
    prov = step.record(precision=config["prompt_cam"]["precision"],
                       models={"prompt_cam": card.used()})
    attrs = {"provenance": prov, "method": "promptcam", "classes": classes, "input_size": card.input_size,
             "normalisation": {"mean": card.mean, "std": card.std},
             "target": config["explain"]["target"],
             "note": "raw last-block attention of the target class's prompt over the patches, one map per head; "
                     "the map covers the whole image resized to input_size"}

    def explain(start: int, batch: torch.Tensor):
        with torch.no_grad(), autocast(device, config["prompt_cam"]["precision"]):
            target, predicted, maps, ranking, probability = model.explain(  # one pass through the backbone
                batch, to_device(torch.from_numpy(targets[start:start + len(batch)]), device))
        records = [{"image_id": image_id, "class": int(target[i]), "species": classes[int(target[i])],
                    "target_source": "true" if targets[start + i] >= 0 else "predicted",
                    "rank": rank, "head": int(ranking[i, rank]), "probability": float(probability[i, rank]),
                    "ranked": bool(predicted[i] == target[i])}
                   for i, image_id in enumerate(rows["image_id"].iloc[start:start + len(batch)])
                   for rank in range(heads)]
        return maps.float().cpu().numpy(), records

    read, records, failures = map_shard(config, rows, ImageInputs(config, rows, card.input_size, card.mean, card.std),
                                        args.maps, (heads, *grid), ("head", "y", "x"), attrs, explain,
                                        batch_size=batch_size, device=device, desc="promptcam")
    step.write("prompt_heads", records, args.heads)
    step.write_failures(failures)
    step.finish(f"{read.sum()} images, {heads} heads ranked")
