"""Phylo-NN evaluation: species distances in code space against the tree, per level.

As the authors do, only the held-out images count (the specimens ``phylo_train`` kept out
of training, listed in ``models/phylonn.json``). Writes ``species_distances`` (every species
pair, level and code kind) and Spearman correlations of code distances against tree
distances into ``evaluation``; both say which images they used in ``subset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from traitpipe.jobs.images import read_rows

from traitpipe.jobs.splits import species_ranks
from traitpipe.jobs.step import Step
from traitpipe.phylo.distances import js_distance_matrix, upper_spearman
from traitpipe.phylo.levels import species_distances
from traitpipe.phylo.model import level_positions
from traitpipe.store.cards import ModelCard


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job phylo_eval --config RUN_CONFIG --codes T.. --images T.. --description F [--phylogeny F]
    --distances T --evaluation T``."""
    step = Step("phylo_eval", argv, paths=("description", "distances", "evaluation"), lists=("codes", "images"),
                optional=("phylogeny",), compute=False)
    args, config = step.args, step.config
    sizes = config["phylo"]["model"]
    held = set(ModelCard.read(args.description).extra["held_out"])
    codes = pd.concat([pd.read_parquet(f) for f in args.codes], ignore_index=True)
    subset = "held_out"
    if held:
        codes = codes[codes["image_id"].isin(held)].reset_index(drop=True)
    else:  # nothing could be held out (one specimen per species): say so in every row
        subset = "train"
        step.finish("WARNING no held-out images (every species has one specimen); evaluating on the training images")
    species = sorted(codes["species"].unique())
    newick = Path(args.phylogeny).read_text() if args.phylogeny else None
    tree = species_distances(species, config["phylo"]["distances"], tree=newick,
                             ranks=species_ranks(config, read_rows(args.images)))
    levels = tree.shape[0]
    phylo = np.stack(codes["phylo_codes"].to_numpy()).astype(np.int64)
    nonphylo = np.stack(codes["nonphylo_codes"].to_numpy()).astype(np.int64)
    matrices = [("phylo", k, js_distance_matrix(phylo[:, level_positions(levels, sizes["codes_per_level"], k)],
                                                codes["species"], sizes["n_codes"])) for k in range(levels)]
    matrices.append(("nonphylo", levels - 1, js_distance_matrix(nonphylo, codes["species"], sizes["n_codes"])))
    rows_a, rows_b = np.triu_indices(len(species), k=1)
    distances, evaluation = [], []
    for kind, level, matrix in matrices:
        distances.append(pd.DataFrame({
            "species_a": np.asarray(species)[rows_a], "species_b": np.asarray(species)[rows_b], "subset": subset,
            "codes": kind,
            "level": level, "code_distance": matrix[rows_a, rows_b], "tree_distance": tree[level][rows_a, rows_b]}))
        evaluation.append({"method": "phylonn", "metric": f"spearman_{kind}_codes_vs_tree", "subset": subset,
                           "level": str(level),
                           "value": _spearman(matrix, tree[level]),
                           "n": len(rows_a)})
    step.write("species_distances", pd.concat(distances, ignore_index=True), args.distances)
    step.write("evaluation", evaluation, args.evaluation)
    for row in evaluation:
        step.finish(f"{row['metric']}, level {row['level']}, {row['subset']} images: {row['value']:.3f}")


def _spearman(codes: np.ndarray, tree: np.ndarray) -> float:
    """Spearman of code against tree distances over species pairs; NaN where undefined (fewer than
    three species, or a level whose tree distances are all equal: every species in one group)."""
    upper = tree[np.triu_indices(len(tree), k=1)]
    if len(tree) < 3 or np.ptp(upper) == 0:
        return float("nan")
    return upper_spearman(codes, tree)
