"""Evaluation against the truth the collection holds: SST against the true parts, every map against the
true trait, faithfulness per method and alpha; on all images and on the cryptic sister pairs."""

from __future__ import annotations


from traitpipe.jobs.splits import cryptic_pairs, sam2_split, trait_parts
from traitpipe.jobs.step import Step
from traitpipe.store.tables import read_table_files
from traitpipe.products import intervened_models
from traitpipe.traits.evaluation import (faithfulness_scores, map_scores, part_effect_scores, retrieval_scores,
                                        segmentation_scores, trait_part_scores, zero_shot_scores)


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job evaluate --config RUN_CONFIG --images T.. --cams T.. [--part-truth T..] [--map-truth T..]
    [--retrieval T..] [--species-traits T..] [--cam-parts T.. --part-effects T..] [--cryptic-pairs F] [--sam2 F]
    --evaluation T``.

    ``--cryptic-pairs``: a JSON file with the cryptic pairs and, where known, each species' trait part(s)
    (``trait_parts``); the part each map names in ``--species-traits`` is then scored (``trait_part``).

    ``--cam-parts`` and ``--part-effects``: every map against its model's part interventions
    (``part_effect_spearman``, ``part_effect_top1``).

    ``--retrieval``: the round-trip IoU of ``segment.retrieval.part``, scored against the part's true
    condition (intact, damaged, absent) read from the true part masks.

    ``--sam2``: the description of a SAM 2 trained here (``models/sam2_trained.json``); SST is then also
    scored on the species it held out from training (``subset = held_out``) and, in-sample, on those it
    trained on (``trained``)."""
    step = Step("evaluate", argv, paths=("evaluation",), lists=("images", "cams", "part_truth", "map_truth", "retrieval",
                                                             "species_traits", "cam_parts", "part_effects"),
                optional=("cryptic_pairs", "sam2"), compute=False)
    args = step.args
    species = read_table_files(args.images, "images").drop_duplicates("image_id").set_index("image_id")["species"]
    cryptic = {name for pair in cryptic_pairs(args.cryptic_pairs) for name in pair}
    image_subsets = {"all": None, **({"cryptic": cryptic} if cryptic else {})}
    cams = read_table_files(args.cams, "cams")
    cams = cams.assign(species=cams["image_id"].map(species))
    records = faithfulness_scores(cams, image_subsets) + zero_shot_scores(cams, image_subsets)
    if cams["relative_drop"].notna().any() and not any(r["metric"].startswith("relative_drop@") for r in records):
        step.finish("WARNING no image is ranked by every map, so RD compares no methods (relative_drop@ rows); "
                    "each method's own mean is in relative_drop_own@")
    if args.map_truth:
        records += map_scores(read_table_files(args.map_truth, "map_truth"), image_subsets)
    if args.part_effects:
        cam_parts = read_table_files(args.cam_parts, "cam_parts")
        records += part_effect_scores(cam_parts, read_table_files(args.part_effects, "part_effects"),
                                      intervened_models(step.config), image_subsets)
    truth = trait_parts(args.cryptic_pairs)
    if args.species_traits and truth:
        records += trait_part_scores(read_table_files(args.species_traits, "species_traits"), truth, image_subsets)
    if args.part_truth:
        part_truth = read_table_files(args.part_truth, "part_truth")
        # a SAM 2 trained here: its training species apart (in-sample) from the held-out ones
        subsets = {"queries": None, **({"cryptic": cryptic} if cryptic else {}), **sam2_split(args.sam2)}
        records += segmentation_scores(part_truth, subsets)
        if args.retrieval:
            records += retrieval_scores(read_table_files(args.retrieval, "retrieval"), part_truth, subsets)
    step.write("evaluation", records, args.evaluation)
    for row in records:
        if row["part"] is None:
            alpha = "" if row["alpha"] is None else f" alpha {row['alpha']:g}"
            value = "undefined" if row["value"] is None else f"{row['value']:.3f}"
            step.finish(f"{row['method']}{alpha} {row['metric']} ({row['subset']}, {row['n']} images): {value}")
