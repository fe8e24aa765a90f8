"""Phylo-NN training step: the base VQGAN, then the disentangler with the base frozen, on the images
of the training specimens (the held-out specimens are kept for the evaluation, as the authors do);
or the authors' checkpoint (``phylo.checkpoint``). Writes ``models/phylonn.pt`` ({"base": ...,
"disentangler": ...}, the authors' parameter names), its description (with the held-out image ids)
and the level heads' accuracy on both splits."""

from __future__ import annotations

from pathlib import Path

import torch

from traitpipe.jobs.images import read_rows, readable_inputs
from traitpipe.jobs.splits import held_out, species_ranks, split
from traitpipe.phylo.model import MEAN_STD
from traitpipe.jobs.models import build_phylonn
from traitpipe.jobs.step import Step
from traitpipe.models.device import seed_everything
from traitpipe.models.checkpoints import load_state_dict, sha256_file
from traitpipe.phylo.levels import species_levels
from traitpipe.phylo.model import split_authors_state
from traitpipe.phylo.training import generate_codes, train_base, train_disentangler
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job phylo_train --config RUN_CONFIG --images T.. [--phylogeny F] --weights F --description F
    --evaluation T --failures T``."""
    step = Step("phylo_train", argv, paths=("weights", "description", "evaluation", "failures"), lists=("images",),
                optional=("phylogeny",))
    args, config, device = step.args, step.config, step.device
    settings, train = config["phylo"], config["phylo"]["train"]
    checkpoint = step.checkpoint("phylo")
    rows, images, failures = readable_inputs(config, read_rows(args.images), settings["image_size"], *MEAN_STD)
    species = sorted(rows["species"].unique())
    tree = Path(args.phylogeny).read_text() if args.phylogeny else None
    levels, level_names, source = species_levels(species, settings["distances"], tree=tree, tree_name=args.phylogeny,
                                                 ranks=species_ranks(config, rows))
    targets = torch.as_tensor(levels[rows["species"].map({s: i for i, s in enumerate(species)}).to_numpy()])
    groups = [int(g) for g in levels.max(0) + 1]
    is_val = held_out(rows, train["val_fraction"], train["seed"])  # the authors evaluate on held-out images
    (fit_images, fit_targets), _ = split(images, targets, is_val)
    workers = config["loader"]["workers"]

    seed_everything(train["seed"])
    base, model = build_phylonn(settings, groups, level_names)
    base_history, history = [], []
    if checkpoint is not None:  # the authors' Phylo-NN, in their state-dict layout
        base_state, disentangler_state = split_authors_state(load_state_dict(checkpoint))
        base.load_state_dict(base_state)
        model.load_state_dict(disentangler_state)
        origin = Source("file", checkpoint, sha256_file(checkpoint))
    else:
        common = {"batch_size": train["batch_size"], "lr": train["lr"], "seed": train["seed"], "device": device,
                  "precision": settings["precision"], "workers": workers,
                  "max_per_class": config["training"]["max_images_per_species"]}
        base_history = train_base(base, fit_images, epochs=train["base_epochs"], labels=fit_targets[:, -1],
                                  **common)
        history = train_disentangler(base, model, fit_images, fit_targets, epochs=train["epochs"], **common)
        origin = Source("trained here")
    logits = generate_codes(base, model, images, batch_size=settings["batch_size"], device=device,
                            precision=settings["precision"], workers=workers)["level_logits"]
    correct = [(level.argmax(1) == targets[:, k]).numpy() for k, level in enumerate(logits)]

    weights, description = args.weights, args.description
    with atomic_path(weights) as tmp:
        torch.save({"base": {k: v.cpu() for k, v in base.state_dict().items()},
                    "disentangler": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)
    accuracy = {subset: [float(c[m].mean()) if m.any() else float("nan") for c in correct]
                for subset, m in (("train", ~is_val), ("held_out", is_val))}
    card = ModelCard("phylonn", origin, sha256=sha256_file(weights), classes=species, mean=MEAN_STD[0],
                     std=MEAN_STD[1], input_size=settings["image_size"], precision=settings["precision"],
                     accuracy=accuracy, history=history, device=str(device), architecture=settings["model"],
                     extra={"feature_size": base.feature_size, "groups": groups, "level_names": level_names,
                            "levels_from": source, "held_out": rows["image_id"][is_val].tolist(),
                            "base_history": base_history})
    card.write(description)
    step.record(precision=settings["precision"], models={"phylonn": card.used()})
    step.write("evaluation", [{"method": "phylonn", "metric": "head_accuracy", "subset": subset, "level": str(k),
                               "value": a, "n": int(m.sum())}
                              for subset, m in (("train", ~is_val), ("held_out", is_val))
                              for k, a in enumerate(accuracy[subset])], args.evaluation)
    step.write_failures(failures)
    step.finish(f"{len(rows)} images ({int(is_val.sum())} held out), {len(species)} species, groups per "
                f"level {groups} ({source}), {card.origin()}, held-out head accuracy "
                f"{[round(a, 3) for a in accuracy['held_out']]}")
