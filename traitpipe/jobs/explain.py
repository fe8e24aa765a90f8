"""Explain step for one (CAM method, shard): raw maps to Zarr, one ``cams`` row per image and alpha."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from traitpipe.explain.batch import explain_batch
from traitpipe.explain.cam import cam_pass, default_layers
from traitpipe.explain.faithfulness import DROP_COLUMNS
from traitpipe.jobs.images import ImageInputs, read_rows
from traitpipe.jobs.map_pass import map_shard
from traitpipe.models.classes import explained_classes
from traitpipe.jobs.models import load_classifier, load_prompt_classifier
from traitpipe.jobs.step import Step
from traitpipe.models.device import autocast, to_device

def method_spec(config: dict, name: str, section: str = "explain") -> dict:
    """The ``<section>.methods`` entry called ``name`` (section ``explain`` or ``clip``)."""
    for spec in config[section]["methods"]:
        if spec["name"] == name:
            return spec
    raise KeyError(f"{section}.methods has no method {name!r}")


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job explain --config RUN_CONFIG --method NAME --images T --weights F --description F
    [--prompts SET] --maps Z --cams T --failures T``.

    With ``--prompts`` (``species`` or ``concept``), the weights are the run's CLIP (``models/clip.pt``) and the
    classes that prompt set's text prompts; the product is ``clip-<set>-<method>``."""
    step = Step("explain", argv, "method", paths=("images", "weights", "description", "maps", "cams", "failures"),
                optional=("prompts",))
    args, config, device = step.args, step.config, step.device
    settings = config["explain"]
    if args.prompts is None:
        spec, product, precision, batch_size = method_spec(config, args.method), args.method, \
            settings["precision"], settings["batch_size"]
        model, card = load_classifier(args.weights, args.description, device)
        classes, prompts, species_class = card.classes, None, card.classes
    else:
        spec, product = method_spec(config, args.method, "clip"), f"clip-{args.prompts}-{args.method}"
        precision, batch_size = config["clip"]["precision"], config["clip"]["batch_size"]
        model, card, chosen = load_prompt_classifier(args.weights, args.description, args.prompts, device)
        classes, prompts, species_class = chosen["labels"], chosen["texts"], chosen["species_prompt"]
    layers = spec["layers"] or default_layers(model)
    alphas = spec["alphas"]
    rows = read_rows(args.images)
    targets = explained_classes(rows["species"], species_class, settings["target"])
    grid = _layer_grid(model, layers, card.input_size, device)
    prov = step.record(precision=precision, models={card.name: card.used()})
    attrs = {"provenance": prov, "method": product, "alphas": alphas, "layers": layers, "classes": classes,
             "input_size": card.input_size, "target": settings["target"],
             **({"prompts": prompts} if prompts is not None else {}),
             "note": "raw maps (ReLU, no min-max) over the whole image resized to input_size; "
                     "resize a map to the image's (height, width) from the images table to overlay it"}

    def explain(start: int, batch: torch.Tensor):
        target = to_device(torch.from_numpy(targets[start:start + len(batch)]), device)
        with autocast(device, precision):
            out = explain_batch(model, batch, layers, method=spec["name"], alphas=alphas,
                                n_compare=settings["n_compare"], fraction=settings["faithfulness_fraction"],
                                target=target)
        return out.raw.cpu().numpy(), _records(rows.iloc[start:start + len(batch)], out, alphas, classes,
                                               settings["faithfulness_fraction"],
                                               targets[start:start + len(batch)] >= 0, prompts)

    read, records, failures = map_shard(config, rows, ImageInputs(config, rows, card.input_size, card.mean, card.std),
                                        args.maps, (len(alphas), *grid), ("alpha", "y", "x"), attrs, explain,
                                        batch_size=batch_size, device=device, desc=product)
    step.write("cams", records, args.cams)
    step.write_failures(failures)
    step.finish(f"{product}: {read.sum()} images x {len(alphas)} alphas")


def _layer_grid(model: torch.nn.Module, layers: list[str], size: int, device: torch.device) -> tuple[int, int]:
    """(h, w) of the raw maps: run one blank image through the CAM pass."""
    result, = cam_pass(model, torch.zeros((1, 3, size, size), device=device), layers)
    return tuple(result.raw[0].shape[1:])


def _records(rows: pd.DataFrame, out, alphas: list, classes: list[str | None], fraction: float,
             true: np.ndarray, prompts: list[str] | None = None) -> list[dict]:
    """``cams`` rows for one batch: one per image and alpha (``true``: bool (B,), the target is the true class).

    ``classes``: the species each class stands for (None for a CLIP concept that stands for no one species);
    ``prompts``: a CLIP's text prompts (the ``*_prompt`` columns), None for a classifier."""
    text = (lambda i: None) if prompts is None else prompts.__getitem__
    target, predicted, similar = (t.cpu().tolist() for t in (out.target, out.predicted, out.similar))
    drops = [{name: getattr(drop, name).cpu().tolist() for name in DROP_COLUMNS} for drop in out.drops]
    records = []
    for i, image_id in enumerate(rows["image_id"]):
        for a, alpha in enumerate(alphas):
            records.append({
                "image_id": image_id, "alpha": alpha, "target": target[i], "target_species": classes[target[i]],
                "target_source": "true" if true[i] else "predicted",
                "predicted": predicted[i], "predicted_species": classes[predicted[i]],
                "compared": out.compared[a][i].cpu().tolist(), "similar_class": similar[i],
                "similar_species": classes[similar[i]], "mask_fraction": fraction,
                "target_prompt": text(target[i]), "predicted_prompt": text(predicted[i]),
                "similar_prompt": text(similar[i]),
                **{name: values[i] for name, values in drops[a].items()}})
    return records
