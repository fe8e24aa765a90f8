"""CLIP step: the run's CLIP-like model (trained here contrastively, or loaded) and its prompts, embedded once.

Writes ``models/clip.pt`` (the image tower's config and weights, the temperature, and per prompt set the
prompts and their unit-norm text embeddings: what every explain job of a shard needs, and no more), its
JSON description, the zero-shot accuracy of a model trained here (held-out specimens apart) and failures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from traitpipe.explain.clip import PromptClassifier, encode_prompts, preprocessing, train_clip
from traitpipe.models.clip import build_clip, clip_tokenizer, load_clip, model_config, with_pool
from traitpipe.explain.prompts import captions, prompt_sets
from traitpipe.jobs.images import read_rows
from traitpipe.jobs.splits import accuracy_rows, cryptic_pairs, labelled_images, split
from traitpipe.jobs.step import Step
from traitpipe.models.device import seed_everything
from traitpipe.models.checkpoints import sha256_file
from traitpipe.models.sources import source_kind
from traitpipe.models.training import predict
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source


def config_value(value, file: str | None):
    """A ``clip.prompts`` value: the JSON file the rule hands over when the config names one, else the value."""
    return json.loads(Path(file).read_text(encoding="utf-8")) if file else value


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job clip_model --config RUN_CONFIG --images T.. [--concepts F] [--common-names F]
    [--cryptic-pairs F] --weights F --description F --evaluation T --failures T``."""
    step = Step("clip_model", argv, paths=("weights", "description", "evaluation", "failures"), lists=("images",),
                optional=("concepts", "common_names", "cryptic_pairs"))
    args, config, device = step.args, step.config, step.device
    settings, checkpoint = config["clip"], step.checkpoint("clip")
    ranks = config["collection"]["columns"]["ranks"]
    rows = read_rows(args.images).drop_duplicates("species")
    taxa = {row["species"]: [row[rank] for rank in ranks] for _, row in rows.iterrows()}
    common = config_value(settings["prompts"]["common_names"], args.common_names)
    concepts = config_value(settings["prompts"]["concepts"], args.concepts)
    sets = prompt_sets(settings["prompts"], taxa, common, concepts)
    history, evaluation, accuracy, failures = [], [], {}, []
    if checkpoint == "train":
        train = settings["train"]
        architecture = with_pool(model_config(settings["model"]), settings["pool"])
        seed_everything(train["seed"])
        clip, tokenizer = build_clip(architecture), clip_tokenizer(architecture)
        pre = preprocessing(clip)
        rows, images, labels, is_val, failures = labelled_images(config, args.images, pre["input_size"], pre["mean"],
                                                                 pre["std"], train["val_fraction"], train["seed"],
                                                                 classes=list(taxa))
        (fit_images, fit_labels), _ = split(images, labels, is_val)
        history = train_clip(clip, tokenizer, fit_images, captions(taxa, settings["prompts"]["template"], common,
                                                                   sets),
                             fit_labels, epochs=train["epochs"], batch_size=train["batch_size"], lr=train["lr"],
                             weight_decay=train["weight_decay"], seed=train["seed"], device=device,
                             precision=settings["precision"],
                             max_per_class=config["training"]["max_images_per_species"],
                             workers=config["loader"]["workers"])
        source, random_weights = Source("trained here", trained="contrastively (clip.train)"), False
    else:
        clip, architecture, tokenizer = load_clip(checkpoint, settings["model"])
        if settings["pool"] is not None:  # as the authors' tutorial sets a released model's
            clip.visual.pool_type, architecture = settings["pool"], with_pool(architecture, settings["pool"])
        clip.to(device)
        pre = preprocessing(clip)
        kind = source_kind(checkpoint)  # random, hf-hub, a Hub-layout folder (local-dir) or a weights file
        source = Source(kind, checkpoint, sha256_file(checkpoint) if kind == "file" else None)
        random_weights = checkpoint is None
    clip.to(device).eval()
    scale = clip.logit_scale.exp().item()
    # each prompt set's classifier, its prompts embedded once (an image tower the CAM code cannot use stops here)
    classifiers = {name: PromptClassifier(clip.visual, encode_prompts(clip, tokenizer, chosen["texts"]), scale)
                   for name, chosen in sets.items()}
    if checkpoint == "train":  # zero-shot accuracy of each set whose prompts stand for every species
        for name, chosen in sets.items():
            own = torch.tensor([chosen["species_prompt"].get(s, -1) for s in taxa])[labels]
            if (own < 0).any():
                continue
            logits = predict(classifiers[name], images, settings["batch_size"], device, settings["precision"],
                             config["loader"]["workers"])
            accuracy[name], records = accuracy_rows(f"clip-{name}", (logits.argmax(1) == own).numpy(), is_val,
                                                    rows["species"].to_numpy(), cryptic_pairs(args.cryptic_pairs))
            evaluation += records
    stored = {name: {**chosen, "embeddings": classifiers[name].text.cpu()} for name, chosen in sets.items()}
    with atomic_path(args.weights) as tmp:
        visual = {k: v.detach().cpu() for k, v in clip.visual.state_dict().items()}
        torch.save({"config": architecture, "visual": visual, "logit_scale": scale, "prompts": stored}, tmp)
    sha = sha256_file(args.weights)
    card = ModelCard("clip", source, sha256=sha, random_weights=random_weights, mean=pre["mean"], std=pre["std"],
                     input_size=pre["input_size"], precision=settings["precision"], accuracy=accuracy,
                     history=history, device=str(device), architecture=architecture,
                     extra={"settings": settings, "prompts": {name: {k: chosen[k] for k in
                                                                     ("texts", "labels", "species_prompt")}
                                                              for name, chosen in sets.items()}})
    card.write(args.description)
    step.record(precision=settings["precision"], models={"clip": card.used()})
    step.write("evaluation", evaluation, args.evaluation)
    step.write_failures(failures)
    said = ", ".join(f"{name} zero-shot val accuracy {value['val']:.3f}" for name, value in accuracy.items())
    counts = ", ".join(f"{name} ({len(chosen['texts'])})" for name, chosen in sets.items())
    step.finish(f"{card.origin()}; prompt sets {counts}" + (f"; {said}" if said else ""))
