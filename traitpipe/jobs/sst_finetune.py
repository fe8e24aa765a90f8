"""SST fine-tuning step: tune SAM 2's decoder side on the collection's own reference masks by the
cycle-consistent round-trip loss; write ``models/sam2_finetuned.pt`` (SAM 2's checkpoint layout).

Each species' first ``queries_per_species`` query images are tuned on and its next
``check_queries_per_species`` guard the tuning (label-free): the weights kept are those with the lowest
round-trip loss on them (:func:`traitpipe.segment.finetune.finetune`).

With true part masks (``collection.columns.parts_truth``), SST is scored against them before and after tuning
on the same images, none of which tuning saw: each species' pseudo-video (its reference, then its queries
with a truth mask, as the segment step plays them) is tracked, and only its queries after the tuned and the
guarding ones are scored (``evaluation`` rows ``miou_untuned`` and ``miou_tuned``, and per part). Scoring the
tuned queries too would reward the tuning for what it was fitted to. The description names
the images of each role (``tuned_images``, ``check_images``, ``scored_images``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from traitpipe.collection.images import ImageError
from traitpipe.jobs.images import image_files, load_pixels, read_rows
from traitpipe.jobs.masks import load_support, truth_images
from traitpipe.jobs.splits import sam2_split
from traitpipe.jobs.step import Step
from traitpipe.models.checkpoints import sha256_file
from traitpipe.segment.backends import SAM2Video
from traitpipe.segment.finetune import finetune
from traitpipe.collection.references import part_names
from traitpipe.segment.train import video_overlaps
from traitpipe.store.atomic import atomic_path
from traitpipe.store.cards import ModelCard, Source
from traitpipe.store.schemas import PART_TRUTH
from traitpipe.traits.evaluation import segmentation_scores


def truth_rows(predictor, videos: list, names: dict[int, str], precision: str, scored: set[str]) -> pd.DataFrame:
    """SST against the truth on each species' pseudo-video (its reference, then its queries with a truth mask, in
    the segment step's order): ``part_truth`` rows at the images' own size, of the ``scored`` images only."""
    parts, rows = sorted(names), []
    for species, support, labels, frames, truths, ids in videos:
        inter, union = video_overlaps(predictor, [support, *frames], labels, truths, parts, precision)
        rows += [{"image_id": image_id, "species": species, "frame_index": t + 1, "part_id": part,
                  "part": names[part],
                  "intersection_pixels": int(inter[t, k]), "union_pixels": int(union[t, k]),
                  "truth_pixels": int((truths[t] == part).sum()),
                  "iou": inter[t, k] / union[t, k] if union[t, k] else np.nan}
                 for t, image_id in enumerate(ids) if image_id in scored for k, part in enumerate(parts)]
    return pd.DataFrame(rows, columns=list(PART_TRUTH.names))


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job sst_finetune --config RUN_CONFIG --images T.. [--reference SPECIES IMAGE MASK]..
    [--trained F] [--trained-description F] --weights F --description F [--evaluation T]``.

    ``--evaluation``: SST against the true part masks before and after tuning (needs ``parts_truth``);
    ``--trained-description``: a SAM 2 trained here, whose held-out and training species are scored apart."""
    step = Step("sst_finetune", argv, paths=("weights", "description"), lists=("images",),
                optional=("trained", "trained_description", "evaluation"), references=True)
    args, config, device = step.args, step.config, step.device
    settings, tune = config["segment"], config["segment"]["finetune"]
    names = part_names(settings["parts"], config["collection"]["root"])
    rows = read_rows(args.images)
    examples, checks, videos, skipped, found_names = [], [], [], [], {}
    roles = {"tuned_images": [], "check_images": [], "scored_images": []}
    for species, group in rows.groupby("species", sort=True):
        try:
            support, labels, image_file, found = load_support(config, species, args.reference, names)
        except ImageError as error:
            skipped.append(str(error))
            continue
        queries = group[[file != image_file for file in image_files(config, group)]]
        n_tune, n_check = tune["queries_per_species"], tune["check_queries_per_species"]
        seen = queries.head(n_tune + n_check)
        pixels, ok, _ = load_pixels(config, seen)
        examples.append((support, labels, pixels[:n_tune]))
        checks += [(support, labels, query) for query in pixels[n_tune:]]
        read = seen["image_id"][ok].tolist()  # as pixels: the readable ones
        roles["tuned_images"] += read[:n_tune]
        roles["check_images"] += read[n_tune:]
        if args.evaluation:  # tracked as the segment step tracks them; scored on those tuning never saw
            frames, truths, kept, unread = truth_images(config, queries)
            videos.append((species, support, labels, frames, truths, kept["image_id"].tolist()))
            roles["scored_images"] += sorted(set(kept["image_id"]) - set(seen["image_id"]))
            found_names.update(found)
            skipped += unread
    if args.evaluation and not roles["scored_images"]:
        step.finish("WARNING no query image is left to score SST before and after tuning: every species' queries "
                    "with a truth mask are tuned on or guard the tuning (lower segment.finetune.queries_per_species "
                    "or check_queries_per_species); its evaluation rows stay empty")
    if settings["backend"] != "sam2_video":
        raise SystemExit(f"segment.finetune tunes SAM 2's video predictor; segment.backend is {settings['backend']!r}")
    step.checkpoint("segment")  # its sha256, when the config gives one, before SAM 2 loads it
    segmenter = SAM2Video(settings, device, trained=args.trained)
    predictor = segmenter.predictor
    scored_names = names or found_names
    unseen = set(roles["scored_images"])
    before = truth_rows(predictor, videos, scored_names, segmenter.precision, unseen) if args.evaluation else None
    tuning = finetune(predictor, examples, steps=tune["steps"], lr=tune["lr"], weight_decay=tune["weight_decay"],
                      modules=tune["modules"], seed=settings["seed"], checks=checks, check_every=tune["check_every"],
                      precision=settings["precision"])
    if args.evaluation:
        after = truth_rows(predictor, videos, scored_names, segmenter.precision, unseen)
        subsets = {"queries": None, **sam2_split(args.trained_description)}
        records = segmentation_scores(before, subsets, "_untuned") + segmentation_scores(after, subsets, "_tuned")
        step.write("evaluation", records, args.evaluation)
        for row in records:
            if row["part"] is None and row["value"] is not None:
                step.finish(f"SST {row['metric']} ({row['subset']}, {row['n']} images): {row['value']:.3f}")
    weights = Path(args.weights)
    with atomic_path(weights) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in predictor.state_dict().items()}}, tmp)
    base = args.trained or settings["checkpoint"]
    kind = ("trained here" if args.trained else "random" if base is None else
            "file" if Path(base).is_file() else "hf-hub")
    ModelCard("sam2", Source(kind, None if args.trained else base, trained="fine-tuned (segment.finetune)"),
              sha256=sha256_file(weights), classes=[scored_names[k] for k in sorted(scored_names)],
              input_size=settings["image_size"], precision=segmenter.precision, history=tuning["losses"],
              device=str(device), architecture={"config": settings["config"]},
              extra={"base": base, "tuned_modules": tune["modules"], "steps": tune["steps"], "lr": tune["lr"],
                     "losses": tuning["losses"], "checks": tuning["checks"], "check_pairs": len(checks),
                     "kept_step": tuning["kept_step"], "species": len(examples), "skipped": skipped, **roles}
              ).write(args.description)
    losses, kept = tuning["losses"], tuning["kept_step"]
    step.finish(f"{tune['steps']} steps on {len(examples)} species, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    if checks:
        guard = {c["step"]: c["loss"] for c in tuning["checks"]}
        verdict = "kept none of the tuning" if kept == 0 else f"kept the weights of step {kept}"
        step.finish(f"guard {verdict}, the lowest mean round-trip loss on {len(checks)} set-aside pairs "
                    f"({guard[0]:.4f} before tuning, {guard[kept]:.4f} kept, {guard[tune['steps']]:.4f} at the end)")
