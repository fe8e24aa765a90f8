"""Codes step for one shard: the phylo and non-phylo codes of every image, into the ``codes`` table."""

from __future__ import annotations

import sys

import pandas as pd

from traitpipe.jobs.common import job_arguments, phylo_images, read_rows, start_job, write_failures
from traitpipe.jobs.models import load_phylonn
from traitpipe.models.device import resolve_device
from traitpipe.phylo.training import generate_codes
from traitpipe.store.provenance import provenance
from traitpipe.store.tables import write_table


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job codes --config RUN_CONFIG --images T --weights F --description F --codes T --failures T``."""
    args = job_arguments("codes", paths=("images", "weights", "description", "codes", "failures")).parse_args(argv)
    config = start_job(args)
    device = resolve_device(config["device"])
    base, model, meta = load_phylonn(args.weights, args.description, config["phylo"], device)
    rows = read_rows(args.images)
    images, ok, failures = phylo_images(config, rows)
    rows = rows[ok].reset_index(drop=True)
    codes = generate_codes(base, model, images, batch_size=config["phylo"]["batch_size"], device=device,
                           precision=config["phylo"]["precision"])
    table = pd.DataFrame({"image_id": rows["image_id"], "species": rows["species"],
                          "phylo_codes": list(codes["phylo"].numpy()),
                          "nonphylo_codes": list(codes["nonphylo"].numpy()),
                          "reconstruction_error": codes["reconstruction_error"].numpy()})
    prov = provenance(config, device=str(device), precision=config["phylo"]["precision"],
                      models={"phylonn": {"sha256": meta["sha256"], "random_weights": False}})
    write_table(table, args.codes, "codes", prov)
    write_failures(args.failures, failures, prov)
    print(f"codes: {len(rows)} images", file=sys.stderr)
