"""Codes step for one shard: the phylo and non-phylo codes of every image, into the ``codes`` table."""

from __future__ import annotations

from traitpipe.jobs.images import ImageInputs, leave_out_unread, read_once, read_rows
from traitpipe.phylo.model import MEAN_STD
from traitpipe.jobs.models import load_phylonn
from traitpipe.jobs.step import Step
from traitpipe.phylo.training import generate_codes


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job codes --config RUN_CONFIG --images T --weights F --description F --codes T --failures T``."""
    step = Step("codes", argv, paths=("images", "weights", "description", "codes", "failures"))
    args, config, device = step.args, step.config, step.device
    base, model, card = load_phylonn(args.weights, args.description, config["phylo"], device)
    rows, settings = read_rows(args.images), config["phylo"]
    batches, problems = read_once(ImageInputs(config, rows, settings["image_size"], *MEAN_STD),
                                  settings["batch_size"], config["loader"]["workers"], device)
    records = []
    if len(rows):
        codes = generate_codes(base, model, batches, batch_size=settings["batch_size"], device=device,
                               precision=settings["precision"])
        records = [{"image_id": image_id, "species": species, "phylo_codes": phylo, "nonphylo_codes": nonphylo,
                    "reconstruction_error": error}
                   for image_id, species, phylo, nonphylo, error in zip(
                       rows["image_id"], rows["species"], codes["phylo"].numpy(), codes["nonphylo"].numpy(),
                       codes["reconstruction_error"].tolist())]
    read, records, failures = leave_out_unread(rows, problems, records)  # all failed: a shard with no codes
    step.record(precision=config["phylo"]["precision"],
                models={"phylonn": card.used()})
    step.write("codes", records, args.codes)
    step.write_failures(failures)
    step.finish(f"{read.sum()} images")
