"""Explain step for one (CAM method, shard): raw maps to Zarr, one ``cams`` row per image and alpha."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from traitpipe.explain.batch import explain_batch
from traitpipe.explain.cam import cam_pass, default_layers
from traitpipe.explain.faithfulness import DROP_COLUMNS
from traitpipe.jobs.common import load_pixels, read_rows
from traitpipe.models.classes import explained_classes
from traitpipe.models.load import load_classifier
from traitpipe.jobs.step import Step
from traitpipe.models.device import autocast, to_device
from traitpipe.models.transforms import to_batch
from traitpipe.store.maps import map_writer

def method_spec(config: dict, name: str) -> dict:
    """The ``explain.methods`` entry called ``name``."""
    for spec in config["explain"]["methods"]:
        if spec["name"] == name:
            return spec
    raise KeyError(f"explain.methods has no method {name!r}")


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job explain --config RUN_CONFIG --method NAME --images T --weights F --description F --maps Z
    --cams T --failures T``."""
    step = Step("explain", argv, "method", paths=("images", "weights", "description", "maps", "cams", "failures"))
    args, config, device = step.args, step.config, step.device
    spec, settings = method_spec(config, args.method), config["explain"]
    model, meta = load_classifier(args.weights, args.description, device)
    layers = spec["layers"] or default_layers(model)
    alphas = spec["alphas"]
    classes = meta["classes"]

    rows = read_rows(args.images)
    pixels, ok, failures = load_pixels(config, rows)
    rows = rows[ok].reset_index(drop=True)
    targets = explained_classes(rows["species"], classes, settings["target"])
    grid = _layer_grid(model, layers, meta["input_size"], device)
    prov = step.record(precision=settings["precision"],
                       models={"classifier": {**meta["source"], "sha256": meta["sha256"]}})
    attrs = {"provenance": prov, "method": spec["name"], "alphas": alphas, "layers": layers, "classes": classes,
             "input_size": meta["input_size"],
             "target": settings["target"],
             "note": "raw maps (ReLU, no min-max) over the whole image resized to input_size; "
                     "resize a map to the image's (height, width) from the images table to overlay it"}
    records = []
    batch_size = settings["batch_size"]
    with map_writer(args.maps, rows["image_id"].tolist(),
                    {"cam": ((len(alphas), *grid), "float16", ("alpha", "y", "x"))}, attrs) as group:
        for start in tqdm(range(0, len(rows), batch_size), total=math.ceil(len(rows) / batch_size),
                          desc=spec["name"], unit="batch", file=sys.stderr):
            batch = to_batch(pixels[start:start + batch_size], meta["input_size"], meta["mean"], meta["std"])
            target = to_device(torch.from_numpy(targets[start:start + len(batch)]), device)
            with autocast(device, settings["precision"]):
                out = explain_batch(model, to_device(batch, device), layers, method=spec["name"], alphas=alphas,
                                    n_compare=settings["n_compare"], fraction=settings["faithfulness_fraction"],
                                    target=target)
            group["cam"][start:start + len(batch)] = out.raw.cpu().numpy().astype(np.float16)
            records += _records(rows.iloc[start:start + len(batch)], out, alphas, classes,
                                settings["faithfulness_fraction"], targets[start:start + len(batch)] >= 0)
    step.write("cams", records, args.cams)
    step.write_failures(failures)
    step.finish(f"{spec['name']}: {len(rows)} images x {len(alphas)} alphas")


def _layer_grid(model: torch.nn.Module, layers: list[str], size: int, device: torch.device) -> tuple[int, int]:
    """(h, w) of the raw maps: run one blank image through the CAM pass."""
    result, = cam_pass(model, torch.zeros((1, 3, size, size), device=device), layers)
    return tuple(result.raw[0].shape[1:])


def _records(rows: pd.DataFrame, out, alphas: list, classes: list[str], fraction: float,
             true: np.ndarray) -> list[dict]:
    """``cams`` rows for one batch: one per image and alpha (``true``: bool (B,), the target is the true class)."""
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
                **{name: values[i] for name, values in drops[a].items()}})
    return records
