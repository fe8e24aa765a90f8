"""INTR training step: one query per species in a DETR-style decoder, trained with the authors' recipe (or a
checkpoint in their layout, loaded); writes ``models/intr.pt``, its description, accuracy rows and failures."""

from __future__ import annotations

import torch

from traitpipe.explain.intr import INTR, architecture, load_intr, train_intr
from traitpipe.jobs.splits import accuracy_rows, cryptic_pairs, labelled_images, split
from traitpipe.jobs.step import Step
from traitpipe.models.device import seed_everything
from traitpipe.models.checkpoints import load_state_dict, sha256_file
from traitpipe.jobs.models import class_order
from traitpipe.models.training import predict
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source

#: The authors' normalisation (datasets/constants.py: ImageNet's).
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: intr settings that size the model.
ARCH_KEYS = ("backbone", "d_model", "nheads", "enc_layers", "dec_layers", "dim_feedforward", "dropout")


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job intr_train --config RUN_CONFIG --images T.. [--cryptic-pairs F] --weights F --description F
    --evaluation T --failures T``."""
    step = Step("intr_train", argv, paths=("weights", "description", "evaluation", "failures"), lists=("images",),
                optional=("cryptic_pairs",))
    args, config, device = step.args, step.config, step.device
    settings, checkpoint = config["intr"], step.checkpoint("intr")
    arch = {key: settings[key] for key in ARCH_KEYS}
    seed_everything(settings["seed"])
    rows, images, labels, is_val, failures = labelled_images(config, args.images, settings["input_size"], MEAN, STD,
                                                             settings["val_fraction"], settings["seed"])
    classes, history, warning = sorted(rows["species"].unique()), [], None
    workers = config["loader"]["workers"]
    if checkpoint is not None:
        model = load_intr(load_state_dict(checkpoint, key="model"), backbone=arch["backbone"],
                          nheads=arch["nheads"], dropout=arch["dropout"])
        classes, warning = class_order(settings["classes"], checkpoint, classes, model.num_classes, config, "intr")
        order = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor(rows["species"].map(order).to_numpy(), dtype=torch.long)
        source = Source("file", checkpoint, sha256_file(checkpoint))
    else:
        model = INTR(len(classes), **arch)
        fit, val = split(images, labels, is_val)
        history = train_intr(model, *fit, epochs=settings["epochs"], lr=settings["lr"],
                             backbone_lr=settings["backbone_lr"], weight_decay=settings["weight_decay"],
                             lr_drop=settings["lr_drop"], clip_norm=settings["clip_norm"],
                             batch_size=settings["batch_size"], seed=settings["seed"], device=device,
                             val=val, precision=settings["precision"],
                             max_per_class=config["training"]["max_images_per_species"], workers=workers)
        source = Source("trained here")
    model.eval()
    correct = (predict(model, images, settings["batch_size"], device, settings["precision"], workers).argmax(1)
               == labels).numpy()
    accuracy, evaluation = accuracy_rows("intr", correct, is_val, rows["species"].to_numpy(),
                                         cryptic_pairs(args.cryptic_pairs))
    with atomic_path(args.weights) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "classes": classes}, tmp)
    sha = sha256_file(args.weights)
    card = ModelCard("intr", source, sha256=sha, classes=classes, mean=MEAN, std=STD,
                     input_size=settings["input_size"], precision=settings["precision"], accuracy=accuracy,
                     history=history, device=str(device),
                     architecture={"backbone": arch["backbone"], "nheads": arch["nheads"],
                                   **architecture(model.state_dict())},
                     extra={"class_order_warning": warning, "settings": settings})
    card.write(args.description)
    step.record(precision=settings["precision"], models={"intr": card.used()})
    step.write("evaluation", evaluation, args.evaluation)
    step.write_failures(failures)
    step.finish(f"{card.origin()}, train accuracy {accuracy['train']:.3f}, val accuracy {accuracy['val']:.3f}")
