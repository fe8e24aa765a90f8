"""SST fine-tuning step: tune SAM 2's decoder side on the collection's own reference masks by the
cycle-consistent round-trip loss; write ``models/sam2_finetuned.pt`` (SAM 2's checkpoint layout)."""

from __future__ import annotations

from pathlib import Path

import torch

from traitpipe.collection.images import ImageError
from traitpipe.jobs.common import load_pixels, load_support, read_rows, write_json
from traitpipe.jobs.step import Step
from traitpipe.models.checkpoints import sha256_file
from traitpipe.segment.backends import SAM2Video
from traitpipe.segment.finetune import finetune
from traitpipe.segment.references import part_names
from traitpipe.store.atomic import atomic_path


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job sst_finetune --config RUN_CONFIG --images T.. [--reference SPECIES IMAGE MASK]..
    [--trained F] --weights F --description F``."""
    step = Step("sst_finetune", argv, paths=("weights", "description"), lists=("images",), optional=("trained",),
                references=True)
    args, config, device = step.args, step.config, step.device
    settings, tune = config["segment"], config["segment"]["finetune"]
    names = part_names(settings["parts"], config["collection"]["root"])
    rows = read_rows(args.images)
    examples, skipped = [], []
    for species, group in rows.groupby("species", sort=True):
        try:
            support, labels, image_file, _ = load_support(config, species, args.reference, names)
        except ImageError as error:
            skipped.append(str(error))
            continue
        root = Path(config["collection"]["root"])
        queries = group[[str(root / p) != image_file for p in group["path"]]].head(tune["queries_per_species"])
        pixels, _, _ = load_pixels(config, queries)
        examples.append((support, labels, pixels))
    if settings["backend"] != "sam2_video":
        raise SystemExit(f"segment.finetune tunes SAM 2's video predictor; segment.backend is {settings['backend']!r}")
    segmenter = SAM2Video(settings, device, trained=args.trained)
    predictor = segmenter.predictor
    losses = finetune(predictor, examples, steps=tune["steps"], lr=tune["lr"], weight_decay=tune["weight_decay"],
                      modules=tune["modules"], seed=settings["seed"], precision=settings["precision"])
    weights = Path(args.weights)
    with atomic_path(weights) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in predictor.state_dict().items()}}, tmp)
    write_json(args.description, {
        "base": {"config": settings["config"], "checkpoint": args.trained or settings["checkpoint"],
                 "random_weights": settings["checkpoint"] is None, "trained_here": args.trained is not None},
        "tuned_modules": tune["modules"], "steps": tune["steps"], "lr": tune["lr"], "losses": losses,
        "species": len(examples), "skipped": skipped, "sha256": sha256_file(weights), "device": str(device),
        "precision": segmenter.precision})
    step.finish(f"{tune['steps']} steps on {len(examples)} species, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
