"""Phylo-NN training step: the base autoencoder, then the disentangler with the base frozen;
writes ``models/phylonn.pt`` ({"base": ..., "disentangler": ...}), its description and head accuracy."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch

from traitpipe.collection.manifest import load_manifest
from traitpipe.config import collection_file
from traitpipe.jobs.common import all_rows, job_arguments, load_pixels, start_job, write_failures, write_json
from traitpipe.jobs.models import model_files
from traitpipe.models.checkpoints import sha256_file
from traitpipe.models.device import resolve_device
from traitpipe.models.transforms import to_batch
from traitpipe.phylo.levels import level_distances, level_labels, rank_labels
from traitpipe.phylo.model import Disentangler, VQAutoencoder
from traitpipe.phylo.training import generate_codes, train_base, train_disentangler
from traitpipe.store.atomic import atomic_path
from traitpipe.store.provenance import provenance
from traitpipe.store.tables import table_path, write_table


def species_levels(config: dict, species: list[str]) -> tuple[np.ndarray, str]:
    """Group of every species at every level (S, L) from the phylogeny, else from the taxonomy ranks."""
    tree = collection_file(config, "phylogeny")
    if tree is not None:
        return level_labels(tree, species, config["phylo"]["distances"]), f"phylogeny {tree}"
    ranks = config["collection"]["columns"]["ranks"]
    if not ranks:
        raise ValueError("phylo needs collection.phylogeny (a Newick tree) or collection.columns.ranks (taxonomy)")
    table = load_manifest(config).drop_duplicates("species").set_index("species").loc[species, ranks]
    return rank_labels(table.to_numpy(dtype=str)), f"taxonomy ranks {', '.join(ranks)}"


def tree_distances(config: dict, species: list[str]) -> np.ndarray:
    """(L, S, S) distances between the species' ancestors per level: from the tree, else 0/1 rank groups."""
    tree = collection_file(config, "phylogeny")
    if tree is not None:
        return level_distances(tree, species, config["phylo"]["distances"])
    labels, _ = species_levels(config, species)
    return np.stack([(labels[:, k, None] != labels[None, :, k]).astype(float) for k in range(labels.shape[1])])


def training_images(config: dict, rows: pd.DataFrame) -> tuple[torch.Tensor, np.ndarray, pd.DataFrame]:
    """Images in [-1, 1] at ``phylo.image_size`` (N, 3, S, S), which rows were readable, and the failures."""
    pixels, ok, failures = load_pixels(config, rows)
    return to_batch(pixels, config["phylo"]["image_size"], [0.5] * 3, [0.5] * 3), ok, failures


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job phylo_train --config RUN_CONFIG``."""
    config = start_job(job_arguments("phylo_train").parse_args(argv))
    settings, sizes, train = config["phylo"], config["phylo"]["model"], config["phylo"]["train"]
    device = resolve_device(config["device"])
    rows = all_rows(config)
    images, ok, failures = training_images(config, rows)
    rows = rows[ok].reset_index(drop=True)
    species = sorted(rows["species"].unique())
    levels, source = species_levels(config, species)
    targets = torch.as_tensor(levels[rows["species"].map({s: i for i, s in enumerate(species)}).to_numpy()])
    feature_size = settings["image_size"] // 2 ** sizes["downsample"]
    groups = [int(g) for g in levels.max(0) + 1]

    torch.manual_seed(train["seed"])
    base = VQAutoencoder(sizes["channels"], sizes["downsample"], sizes["z_channels"], sizes["base_codes"])
    model = Disentangler(sizes["z_channels"], feature_size, groups, hidden=sizes["hidden"],
                         phylo_channels=sizes["phylo_channels"], code_dim=sizes["code_dim"],
                         codes_per_level=sizes["codes_per_level"], n_codes=sizes["n_codes"])
    common = {"batch_size": train["batch_size"], "lr": train["lr"], "seed": train["seed"], "device": device,
              "precision": settings["precision"]}
    base_history = train_base(base, images, epochs=train["base_epochs"], **common)
    history = train_disentangler(base, model, images, targets, epochs=train["epochs"], **common)
    logits = generate_codes(base, model, images, batch_size=settings["batch_size"], device=device,
                            precision=settings["precision"])["level_logits"]
    accuracy = [float((level.argmax(1) == targets[:, k]).float().mean()) for k, level in enumerate(logits)]

    weights, description = model_files(config, "phylonn")
    with atomic_path(weights) as tmp:
        torch.save({"base": {k: v.cpu() for k, v in base.state_dict().items()},
                    "disentangler": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)
    write_json(description, {"model": sizes, "image_size": settings["image_size"], "feature_size": feature_size,
                             "groups": groups, "species": species, "levels_from": source,
                             "level_accuracy": accuracy, "base_history": base_history, "history": history,
                             "sha256": sha256_file(weights), "device": str(device)})
    prov = provenance(config, device=str(device), precision=settings["precision"], models={"phylonn": {"sha256": sha256_file(weights),
                                                                      "random_weights": False}})
    evaluation = pd.DataFrame([{"model": "phylonn", "metric": "head_accuracy", "subset": "train", "level": str(k),
                                "value": a, "n": len(rows)} for k, a in enumerate(accuracy)])
    write_table(evaluation, table_path(config["results"], "evaluation", "phylo_train", "phylo_train"), "evaluation",
                prov)
    write_failures(config, "phylo_train", "all", failures, prov)
    print(f"phylo_train: {len(rows)} images, {len(species)} species, groups per level {groups} ({source}), "
          f"head accuracy {[round(a, 3) for a in accuracy]}", file=sys.stderr)
