"""Part interventions for one (model, shard): remove each SST part of each image and record how the model's
answer changes (``part_effects``: one row per image and part). The model's own evidence of the parts it uses,
against which every map of it is scored (``part_effect_spearman``, ``part_effect_top1``)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from traitpipe.explain.interventions import part_effects
from traitpipe.jobs.images import ImageInputs, leave_out_unread, read_once, read_rows
from traitpipe.jobs.models import load_classifier, load_intr_model, load_prompt_cam, load_prompt_classifier
from traitpipe.jobs.step import Step
from traitpipe.models.classes import explained_classes
from traitpipe.models.device import to_device
from traitpipe.store.cards import ModelCard
from traitpipe.store.maps import open_maps
from traitpipe.traits.maps import input_masks


def load_model(loader: str, args, device: torch.device):
    """The model a product explains, as the map job loads it: (model, card, class names, species -> class).

    ``loader`` is the first model of the product's kind (:data:`traitpipe.products.MAP_KINDS`): ``classifier``,
    ``clip`` (one prompt set, ``--prompts``), ``intr`` or ``prompt_cam`` (on the classifier's backbone)."""
    if loader == "classifier":
        model, card = load_classifier(args.weights, args.description, device)
        return model, card, card.classes, card.classes
    if loader == "clip":
        model, card, chosen = load_prompt_classifier(args.weights, args.description, args.prompts, device)
        return model, card, chosen["labels"], chosen["species_prompt"]
    if loader == "intr":
        model, card = load_intr_model(args.weights, args.description)
    elif loader == "prompt_cam":
        model, _ = load_prompt_cam(args.classifier, args.classifier_description, args.weights)
        card = ModelCard.read(args.description)
    else:
        raise SystemExit(f"part_effects: no model loader {loader!r} (classifier, clip, intr, prompt_cam)")
    return model.to(device).eval(), card, card.classes, card.classes


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job part_effects --config RUN_CONFIG --model NAME --loader KIND --images T --labels Z
    --weights F --description F [--prompts SET] [--classifier F --classifier-description F] --part-effects T
    --failures T``."""
    step = Step("part_effects", argv, "model", "loader",
                paths=("images", "labels", "weights", "description", "part_effects", "failures"),
                optional=("prompts", "classifier", "classifier_description"))
    args, config, device = step.args, step.config, step.device
    settings = config["interventions"]
    model, card, classes, species_class = load_model(args.loader, args, device)
    rows = read_rows(args.images)
    labels = open_maps(args.labels)
    label_index = {image_id: j for j, image_id in enumerate(labels["image_id"][:].tolist())}
    segmented = rows["image_id"].isin(label_index).to_numpy()
    rows = rows[segmented].reset_index(drop=True)  # an image SST could not segment has no parts (segment's failure)
    placed, transforms, sizes = labels["part_labels"], labels["canvas_transform"][:], labels["image_size"][:]
    parts = {int(k): v for k, v in labels.attrs["parts"].items()}
    targets = explained_classes(rows["species"], species_class, config["explain"]["target"])
    step.record(precision="float32", models={card.name: card.used()})

    batches, problems = read_once(ImageInputs(config, rows, card.input_size, card.mean, card.std),
                                  settings["batch_size"], config["loader"]["workers"], device)
    records = []
    for index, batch in tqdm(batches(), total=-(-len(rows) // settings["batch_size"]), desc=f"{args.model} parts",
                             unit="batch", file=sys.stderr):
        batch = to_device(batch, device)
        chosen = [label_index[image_id] for image_id in rows["image_id"].iloc[index]]
        masks = np.stack([input_masks(placed[j], transforms[j], sizes[j], list(parts), card.input_size)
                          for j in chosen])
        effects = part_effects(model, batch, to_device(torch.from_numpy(masks), device),
                               to_device(torch.from_numpy(targets[index]), device), fill=settings["fill"])
        target, similar = effects.target, effects.similar
        values = {name: getattr(effects, name).float().cpu().numpy() for name in
                  ("delta_logit", "delta_probability", "delta_margin")}
        area = masks.reshape(*masks.shape[:2], -1).mean(axis=2)
        for b, i in enumerate(index.tolist()):
            t, s = int(target[b]), int(similar[b])
            for p, (part_id, name) in enumerate(parts.items()):
                records.append({"image_id": rows.at[i, "image_id"], "species": rows.at[i, "species"],
                                "part_id": part_id, "part": name, "area_share": float(area[b, p]),
                                "target": t, "target_species": classes[t], "similar_species": classes[s],
                                "fill": settings["fill"], **{k: float(v[b, p]) for k, v in values.items()}})
    _, records, failures = leave_out_unread(rows, problems, records)
    step.write("part_effects", pd.DataFrame.from_records(records), args.part_effects)
    step.write_failures(failures)
    step.finish(f"{args.model}: {len(rows)} images x {len(parts)} parts removed ({settings['fill']} fill), "
                f"{len(parts) + 1} forward passes per batch")
