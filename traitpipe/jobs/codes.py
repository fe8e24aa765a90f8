"""Codes step for one shard: the phylo and non-phylo codes of every image, into the ``codes`` table."""

from __future__ import annotations

import pandas as pd

from traitpipe.jobs.common import phylo_images, read_rows
from traitpipe.models.load import load_phylonn
from traitpipe.jobs.step import Step
from traitpipe.phylo.training import generate_codes


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job codes --config RUN_CONFIG --images T --weights F --description F --codes T --failures T``."""
    step = Step("codes", argv, paths=("images", "weights", "description", "codes", "failures"))
    args, config, device = step.args, step.config, step.device
    base, model, meta = load_phylonn(args.weights, args.description, config["phylo"], device)
    rows, images, failures = phylo_images(config, read_rows(args.images))
    table = []  # a shard whose images all failed is a shard with no codes
    if len(rows):
        codes = generate_codes(base, model, images, batch_size=config["phylo"]["batch_size"], device=device,
                               precision=config["phylo"]["precision"], workers=config["loader"]["workers"])
        table = pd.DataFrame({"image_id": rows["image_id"], "species": rows["species"],
                              "phylo_codes": list(codes["phylo"].numpy()),
                              "nonphylo_codes": list(codes["nonphylo"].numpy()),
                              "reconstruction_error": codes["reconstruction_error"].numpy()})
    step.record(precision=config["phylo"]["precision"],
                models={"phylonn": {"sha256": meta["sha256"], "random_weights": False}})
    step.write("codes", table, args.codes)
    step.write_failures(failures)
    step.finish(f"{len(rows)} images")
