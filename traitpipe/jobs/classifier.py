"""Classifier step: resolve the configured model source, train it on the collection if asked,
and write ``models/classifier.pt`` (a state dict), ``models/classifier.json`` and its accuracy."""

from __future__ import annotations

import torch

from traitpipe.jobs.images import read_rows
from traitpipe.jobs.splits import accuracy_rows, cryptic_pairs, labelled_images, split
from traitpipe.jobs.models import class_order
from traitpipe.jobs.step import Step
from traitpipe.models.device import seed_everything
from traitpipe.models.checkpoints import sha256_file
from traitpipe.models.classifier import build_classifier, head_outputs, pool_kwargs
from traitpipe.models.sources import OWN_ARCHITECTURE, PRETRAINED, source_kind
from traitpipe.models.training import predict, train_classifier
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job classifier --config RUN_CONFIG --images T.. [--cryptic-pairs F] --weights F --description F
    --evaluation F --failures F``."""
    step = Step("classifier", argv, paths=("weights", "description", "evaluation", "failures"), lists=("images",),
                optional=("cryptic_pairs",))
    args, config, device = step.args, step.config, step.device
    spec, train = config["classifier"], config["classifier"]["train"]
    checkpoint = step.checkpoint("classifier")
    species = sorted(read_rows(args.images)["species"].unique())
    classes, warning, kind = species, None, source_kind(checkpoint)
    if not train["enabled"] and kind in PRETRAINED:
        raise SystemExit(f"classifier.checkpoint {checkpoint!r} gives pretrained features, not a head for "
                         "this collection's species: set classifier.train.enabled (with train.linear_probe: true "
                         "to keep the backbone as it is)")
    if kind == "file" and not train["enabled"]:  # the checkpoint's own head: its class order
        outputs = head_outputs(spec["arch"], checkpoint, kwargs=spec["kwargs"])
        classes, warning = class_order(spec["classes"], checkpoint, species, outputs, config, "classifier")

    kwargs = {**spec["kwargs"], **pool_kwargs(None if kind in OWN_ARCHITECTURE else spec["arch"], spec["pool"],
                                              linear_probe=train["linear_probe"], kwargs=spec["kwargs"])}
    seed_everything(train["seed"])
    model, info = build_classifier(spec["arch"], len(classes), kwargs=kwargs, source=checkpoint,
                                   new_head=train["enabled"])
    mean, std = spec["mean"] or info["mean"], spec["std"] or info["std"]  # the config's, else the model's own
    rows, images, labels, is_val, failures = labelled_images(config, args.images, spec["input_size"], mean, std,
                                                             train["val_fraction"], train["seed"], classes)
    history, workers = [], config["loader"]["workers"]
    if train["enabled"]:
        fit, val = split(images, labels, is_val)
        history = train_classifier(
            model, *fit, epochs=train["epochs"], batch_size=train["batch_size"], lr=train["lr"],
            weight_decay=train["weight_decay"], linear_probe=train["linear_probe"], seed=train["seed"],
            device=device, val=val, precision=spec["precision"],
            max_per_class=config["training"]["max_images_per_species"], workers=workers)
    model.eval()
    predicted = predict(model, images, train["batch_size"], device, spec["precision"], workers).argmax(1)
    correct = (predicted == labels).numpy()

    weights, description = args.weights, args.description
    with atomic_path(weights) as tmp:
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "classes": classes}, tmp)
    accuracy, evaluation = accuracy_rows("classifier", correct, is_val, rows["species"].to_numpy(),
                                         cryptic_pairs(args.cryptic_pairs))
    trained = ("linear probe" if train["linear_probe"] else "fine-tuned") if train["enabled"] else None
    card = ModelCard("classifier", Source(info["source"], info["checkpoint"], info["sha256"], trained),
                     sha256=sha256_file(weights), random_weights=info["random_weights"] and not train["enabled"],
                     classes=classes, mean=mean, std=std, input_size=spec["input_size"], precision=spec["precision"],
                     accuracy=accuracy, history=history, device=str(device),
                     architecture={"arch": spec["arch"], "kwargs": kwargs},
                     extra={"class_order_warning": warning})
    card.write(description)
    step.record(precision=spec["precision"], models={"classifier": card.used()})
    step.write("evaluation", evaluation, args.evaluation)
    step.write_failures(failures)
    step.finish(f"{spec['arch']} ({card.origin()}), train accuracy {accuracy['train']:.3f}, "
                f"val accuracy {accuracy['val']:.3f} on {int(is_val.sum())} images")
