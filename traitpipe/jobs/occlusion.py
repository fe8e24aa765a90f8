"""Occlusion step for one shard: the classifier's occlusion map of each image's target class to Zarr, and one
``cams`` row per image (``method = occlusion``: prediction, target, and the faithfulness of the map)."""

from __future__ import annotations

import torch

from traitpipe.explain.cam import similar_classes
from traitpipe.explain.faithfulness import confidence_drop
from traitpipe.explain.occlusion import occlusion_maps
from traitpipe.jobs.images import ImageInputs, read_rows
from traitpipe.jobs.map_pass import cams_records, map_shard
from traitpipe.jobs.models import load_classifier
from traitpipe.jobs.step import Step
from traitpipe.models.classes import explained_classes


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job occlusion --config RUN_CONFIG --images T --weights F --description F --maps Z --cams T
    --failures T``."""
    step = Step("occlusion", argv, paths=("images", "weights", "description", "maps", "cams", "failures"))
    args, config, device = step.args, step.config, step.device
    settings, fraction = config["occlusion"], config["explain"]["faithfulness_fraction"]
    model, card = load_classifier(args.weights, args.description, device)
    rows, size, stride = read_rows(args.images), card.input_size, settings["stride"]
    targets = explained_classes(rows["species"], card.classes, config["explain"]["target"])
    prov = step.record(models={"classifier": card.used()})
    attrs = {"provenance": prov, "method": "occlusion", "alphas": [None], "classes": card.classes,
             "input_size": size, "target": config["explain"]["target"], "window": settings["window"],
             "stride": stride,
             "note": "the drop of the target's logit when a window x window square around each cell is filled with "
                     "the normalisation mean (captum's Occlusion), averaged per stride x stride cell, negatives "
                     "set to 0; the map covers the whole image resized to input_size"}

    def explain(start: int, batch: torch.Tensor):
        wanted = torch.as_tensor(targets[start:start + len(batch)], device=batch.device)
        with torch.no_grad():
            logits = model(batch).float()
        predicted = logits.argmax(1)
        target = torch.where(wanted >= 0, wanted, predicted)
        similar = similar_classes(logits, target, 1)[:, 0]
        maps = occlusion_maps(model, batch, target, window=settings["window"], stride=stride,
                              per_eval=settings["per_eval"])
        drop = confidence_drop(model, batch, maps, target, similar, probabilities=logits.softmax(1),
                               fraction=fraction)
        return maps[:, None].cpu().numpy(), cams_records(rows["image_id"].iloc[start:start + len(batch)],
                                                         targets[start:start + len(batch)] >= 0, target, predicted,
                                                         similar, drop, card.classes, fraction)

    read, records, failures = map_shard(config, rows, ImageInputs(config, rows, size, card.mean, card.std), args.maps,
                                        (1, size // stride, size // stride), ("alpha", "y", "x"), attrs, explain,
                                        batch_size=settings["batch_size"], device=device, desc="occlusion")
    step.write("cams", records, args.cams)
    step.write_failures(failures)
    step.finish(f"occlusion: {read.sum()} images, {settings['window']} px squares every {stride} px")
