"""Classifier step: resolve the configured model source, train it on the collection if asked,
and write ``models/classifier.pt`` (a state dict), ``models/classifier.json`` and its accuracy."""

from __future__ import annotations

import sys

import pandas as pd
import torch

from traitpipe.jobs.common import job_arguments, labelled_images, read_rows, start_job, write_failures, write_json
from traitpipe.jobs.models import class_order
from traitpipe.models.checkpoints import sha256_file
from traitpipe.models.classifier import build_classifier, head_outputs
from traitpipe.models.device import resolve_device
from traitpipe.models.training import predict, train_classifier
from traitpipe.store.atomic import atomic_path
from traitpipe.store.provenance import provenance
from traitpipe.store.tables import write_table


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job classifier --config RUN_CONFIG --images T.. --weights F --description F --evaluation F
    --failures F``."""
    args = job_arguments("classifier", paths=("weights", "description", "evaluation", "failures"),
                         lists=("images",)).parse_args(argv)
    config = start_job(args)
    spec, train = config["classifier"], config["classifier"]["train"]
    device = resolve_device(config["device"])
    species = sorted(read_rows(args.images)["species"].unique())
    classes, warning = species, None
    if spec["checkpoint"] is not None and not train["enabled"]:  # the checkpoint's own head: its class order
        outputs = head_outputs(spec["arch"], spec["checkpoint"], kwargs=spec["kwargs"])
        classes, warning = class_order(spec["classes"], spec["checkpoint"], species, outputs, config, "classifier")

    rows, images, labels, is_val, failures = labelled_images(config, args.images, spec["input_size"], spec["mean"],
                                                             spec["std"], train["val_fraction"], train["seed"], classes)

    torch.manual_seed(train["seed"])
    model, info = build_classifier(spec["arch"], len(classes), kwargs=spec["kwargs"], checkpoint=spec["checkpoint"],
                                   pretrained=spec["pretrained"], new_head=train["enabled"])
    info["class_order_warning"] = warning
    history = []
    if train["enabled"]:
        mask = torch.from_numpy(is_val)
        history = train_classifier(
            model, images[~mask], labels[~mask], epochs=train["epochs"], batch_size=train["batch_size"],
            lr=train["lr"], weight_decay=train["weight_decay"], linear_probe=train["linear_probe"],
            seed=train["seed"], device=device, val=(images[mask], labels[mask]), precision=spec["precision"])
        info["random_weights"] = False
        info["trained"] = "linear probe" if train["linear_probe"] else "fine-tuned"
    model.eval()
    predicted = predict(model, images, train["batch_size"], device, spec["precision"]).argmax(1)
    correct = (predicted == labels).numpy()

    weights, description = args.weights, args.description
    with atomic_path(weights) as tmp:
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "classes": classes}, tmp)
    accuracy = {subset: (float(correct[m].mean()) if m.any() else float("nan"), int(m.sum()))
                for subset, m in (("train", ~is_val), ("val", is_val))}
    write_json(description, {
        **{k: spec[k] for k in ("arch", "kwargs", "input_size", "mean", "std")}, "classes": classes,
        "source": info, "sha256": sha256_file(weights), "accuracy": {k: v[0] for k, v in accuracy.items()},
        "history": history, "device": str(device)})
    prov = provenance(config, device=str(device), precision=spec["precision"],
                      models={"classifier": {**info, "sha256": sha256_file(weights)}})
    evaluation = pd.DataFrame([{"model": "classifier", "metric": "top1_accuracy", "subset": subset, "level": None,
                                "value": value, "n": n} for subset, (value, n) in accuracy.items()])
    write_table(evaluation, args.evaluation, "evaluation", prov)
    write_failures(args.failures, failures, prov)
    origin = f"{info['source']} weights" + (f", {info['trained']} here" if train["enabled"] else "")
    print(f"classifier: {spec['arch']} ({origin}), train accuracy {accuracy['train'][0]:.3f}, "
          f"val accuracy {accuracy['val'][0]:.3f} on {accuracy['val'][1]} images", file=sys.stderr)
