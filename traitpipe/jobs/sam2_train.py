"""Train a SAM 2 here (``segment.checkpoint: train``): SAM 2's own video training on pseudo-videos of the
collection's specimens, with their true part masks as targets; species held out for validation.
Writes ``models/sam2_trained.pt`` in SAM 2's checkpoint layout and ``models/sam2_trained.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from traitpipe.jobs.images import read_rows

from traitpipe.jobs.masks import truth_images

from traitpipe.jobs.step import Step
from traitpipe.models.checkpoints import sha256_file
from traitpipe.collection.references import part_names
from traitpipe.segment.sst import config_file
from traitpipe.segment.train import STUCK_MIOU, train_sam2
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source


#: segment.train keys that are train_sam2's arguments of the same name.
TRAIN_KEYS = ("epochs", "frames", "batch", "lr", "encoder_lr", "weight_decay", "warmup", "augment", "pretrain_steps",
              "validate_every", "seed", "restarts", "restart_at")


def held_out_species(species: list[str], count: int, seed: int) -> list[str]:
    """The species kept out of training (validated on), drawn with ``seed``; at least one species trains.

    Examples
    --------
    >>> held_out_species(["a", "b", "c"], 5, 0)  # never all of them
    ['a', 'c']
    """
    count = min(count, len(species) - 1)
    chosen = np.random.default_rng([seed, 15]).permutation(len(species))[:count]
    return sorted(species[i] for i in chosen)


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job sam2_train --config RUN_CONFIG --images T.. --weights F --description F``."""
    step = Step("sam2_train", argv, paths=("weights", "description"), lists=("images",))
    args, config, device = step.args, step.config, step.device
    settings, train = config["segment"], config["segment"]["train"]
    names = part_names(settings["parts"], config["collection"]["root"])
    frames, truths, kept, skipped = truth_images(config, read_rows(args.images))
    videos = {}
    for image, labels, species in zip(frames, truths, kept["species"]):
        videos.setdefault(species, ([], []))
        videos[species][0].append(image)
        videos[species][1].append(labels)
    if not videos:
        raise SystemExit("sam2_train: no image has a readable true part mask (collection.columns.parts_truth)")
    parts = sorted(names) if names else sorted({int(v) for _, labels in videos.values() for m in labels
                                                for v in np.unique(m) if v})
    held = held_out_species(sorted(videos), train["val_species"], train["seed"])
    config_path = config_file(settings["config"])
    model, history, pretrain_losses = train_sam2(config_path, settings["image_size"], videos, held, parts,
                                                 **{key: train[key] for key in TRAIN_KEYS}, device=device)
    last = history[-1]
    attempts = last["attempt"] + 1
    # from random weights, training can stay on the plateau where every mask is empty (bench/sst_train.py)
    stuck = last.get("val_miou", 1.0) < STUCK_MIOU
    warning = (f"held-out mIoU {last['val_miou']:.3f} after {train['epochs']} epochs ({attempts} attempt(s)): "
               "training stayed on the plateau where masks are empty or wrong; its masks are not worth reading. "
               "Try another segment.train.seed, more segment.train.restarts or more segment.train.epochs"
               ) if stuck else None
    weights = Path(args.weights)
    with atomic_path(weights) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp)
    ModelCard("sam2", Source("trained here", trained="on the collection's true part masks, not released SAM 2 "
                                                 "weights"),
              sha256=sha256_file(weights), classes=[names[p] if names else f"part_{p}" for p in parts],
              input_size=settings["image_size"],
              accuracy={"val_miou": last.get("val_miou")}, history=history, device=str(device),
              architecture={"config": settings["config"],
                            "config_yaml": Path(config_path).read_text() if Path(config_path).is_file() else None},
              extra={"collection": config["collection"]["root"], "train": train,
                     "species": sorted(set(videos) - set(held)), "held_out": held, "skipped": skipped,
                     "pretrain_losses": pretrain_losses, "attempts": attempts, "warning": warning}
              ).write(args.description)
    if pretrain_losses:
        step.finish(f"encoder pretrained {len(pretrain_losses)} steps: part-labelling loss {pretrain_losses[0]:.3f} -> "
                    f"{np.mean(pretrain_losses[-20:]):.3f}")
    for record in history:
        if "fit_miou" in record and record["attempt"] < last["attempt"]:  # the check that restarted it
            step.finish(f"attempt {record['attempt'] + 1} stuck at epoch {record['epoch']} (training species' mIoU "
                        f"{record['fit_miou']:.3f}): started again with seed {train['seed'] + record['attempt'] + 1}")
    first = next(record for record in history if record["attempt"] == last["attempt"])
    step.finish(f"{train['epochs']} epochs ({last['seconds']:.0f} s); "
                f"loss {first['loss']:.3f} -> {last['loss']:.3f}; "
                f"held-out species {held}: mIoU {last.get('val_miou', float('nan')):.3f}")
    if warning:
        step.finish(f"WARNING: {warning}")
