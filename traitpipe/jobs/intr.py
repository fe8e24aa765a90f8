"""INTR explain step for one shard: the target class query's cross-attention map per head to Zarr, and one
``cams`` row per image (``method = intr``: prediction, target, and the faithfulness of the head-mean map)."""

from __future__ import annotations

import torch

from traitpipe.explain.cam import similar_classes
from traitpipe.explain.faithfulness import confidence_drop
from traitpipe.jobs.images import ImageInputs, read_rows
from traitpipe.jobs.map_pass import cams_records, map_shard
from traitpipe.jobs.step import Step
from traitpipe.models.classes import explained_classes
from traitpipe.models.device import autocast, to_device
from traitpipe.jobs.models import load_intr_model


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job intr --config RUN_CONFIG --images T --weights F --description F --maps Z --cams T
    --failures T``."""
    step = Step("intr", argv, paths=("images", "weights", "description", "maps", "cams", "failures"))
    args, config, device = step.args, step.config, step.device
    settings, fraction = config["intr"], config["explain"]["faithfulness_fraction"]
    model, card = load_intr_model(args.weights, args.description)
    model.to(device)
    classes, size = card.classes, card.input_size
    with torch.no_grad():  # the backbone's grid at input_size
        grid = tuple(model.attention_maps(torch.zeros(1, 3, size, size, device=device)).shape[-2:])
    rows, batch_size = read_rows(args.images), settings["batch_size"]
    targets = explained_classes(rows["species"], classes, config["explain"]["target"])
    prov = step.record(precision=settings["precision"],
                       models={"intr": card.used()})
    attrs = {"provenance": prov, "method": "intr", "heads": list(range(model.num_heads)), "classes": classes,
             "input_size": size, "target": config["explain"]["target"],
             "note": "the last decoder layer's cross-attention of the target class's query over the backbone's "
                     "stride-32 grid, one map per head (each sums to 1); the map covers the whole image resized "
                     "to input_size"}

    def explain(start: int, batch: torch.Tensor):
        wanted = to_device(torch.tensor(targets[start:start + len(batch)]), device)
        with torch.no_grad(), autocast(device, settings["precision"]):
            logits, maps = model(batch, return_maps=True)  # (B, C), (B, heads, C, h, w): one pass
            logits = logits.float()
            predicted = logits.argmax(1)
            target = torch.where(wanted >= 0, wanted, predicted)
            chosen = maps[torch.arange(len(batch), device=maps.device), :, target].float()  # (B, heads, h, w)
            similar = similar_classes(logits, target, 1)[:, 0]
            drop = confidence_drop(model, batch, chosen.mean(1), target, similar,
                                   probabilities=logits.softmax(1), fraction=fraction)
        return chosen.cpu().numpy(), cams_records(rows["image_id"].iloc[start:start + len(batch)],
                                                  targets[start:start + len(batch)] >= 0, target, predicted, similar,
                                                  drop, classes, fraction)

    read, records, failures = map_shard(config, rows, ImageInputs(config, rows, size, card.mean, card.std), args.maps,
                                        (model.num_heads, *grid), ("head", "y", "x"), attrs, explain,
                                        batch_size=batch_size, device=device, desc="intr")
    step.write("cams", records, args.cams)
    step.write_failures(failures)
    step.finish(f"intr: {read.sum()} images x {model.num_heads} heads")
