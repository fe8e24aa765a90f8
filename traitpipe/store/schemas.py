"""Every Parquet table's schema, in one place, each table and column with the words that document it.

A table is written one file per shard (``tables/<table>/[<partition>=<value>/]part-<shard>.parquet``);
``PARTITIONS`` names the hive partition column of the tables that have one.
Every table also carries ``run_id`` and ``config_hash`` (added by the writer). docs/outputs.md is written from
this module (``python scripts/write_outputs_doc.py``), and a test keeps the two equal.
"""

from __future__ import annotations

import textwrap

import pyarrow as pa


def col(name: str, kind: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    """A column with its documentation (the field's ``doc`` metadata, which Parquet files keep).

    Examples
    --------
    >>> col("n", pa.int64(), "images", nullable=False).metadata
    {b'doc': b'images'}
    """
    return pa.field(name, kind, nullable=nullable, metadata={"doc": doc})


RUN_COLUMNS = [col("run_id", pa.string(), "the run: the config's `run_id`, or its hash", nullable=False),
               col("config_hash", pa.string(), "hash of the validated config the row was made with", nullable=False)]

IMAGES = pa.schema([
    col("image_id", pa.string(), "first 16 hex digits of the file's sha256", nullable=False),
    col("path", pa.string(), "the image file, as the manifest names it", nullable=False),
    col("fetched", pa.string(), "where a URL's image was fetched to: `<batch>.parquet#image/<row>` in the media "
        "folder (`collection.fetch`); null for a local file"),
    col("species", pa.string(), "the species", nullable=False),
    col("label", pa.int32(), "the species' index in the sorted species", nullable=False),
    col("specimen_id", pa.string(), "the specimen (`collection.columns.specimen`)"),
    col("mask", pa.string(), "the reference mask of a labelled image (SST's support)"),
    col("parts_truth", pa.string(), "the true part labels of the image (`collection.columns.parts_truth`)"),
    col("trait_truth", pa.string(), "the true trait's pixels (`collection.columns.trait_truth`)"),
    col("width", pa.int32(), "pixels, as displayed (EXIF orientation applied)", nullable=False),
    col("height", pa.int32(), "pixels, as displayed", nullable=False),
    col("shard", pa.string(), "the shard it belongs to", nullable=False),
    col("row", pa.int64(), "its row in the manifest", nullable=False),
])

FAILURES = pa.schema([
    col("path", pa.string(), "the image file"),
    col("image_id", pa.string(), "the image, when it could be read"),
    col("species", pa.string(), "its species"),
    col("shard", pa.string(), "its shard"),
    col("row", pa.int64(), "its manifest row"),
    col("reason", pa.string(), "what went wrong, in words", nullable=False),
])

CAMS = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("alpha", pa.float32(), "null: the base method; a value: Finer-CAM with that comparison strength"),
    col("target", pa.int32(), "the class explained", nullable=False),
    col("target_species", pa.string(), "the species the target stands for (for a CLIP prompt, the species it "
        "names; null for a concept that no one species carries)"),
    col("target_source", pa.string(), "`true` (the image's species, a class of the model) or `predicted` "
        "(`explain.target: predicted`, or a species the model does not know)", nullable=False),
    col("predicted", pa.int32(), "the class the model predicts", nullable=False),
    col("predicted_species", pa.string(), "the species it stands for"),
    col("compared", pa.list_(pa.int32()), "Finer-CAM's compared classes, most similar first"),
    col("similar_class", pa.int32(), "d, the class the model finds most similar to the target c (rank 1 by "
        "|y - y_c|); faithfulness as Finer-CAM's Eq. 10", nullable=False),
    col("similar_species", pa.string(), "the species d stands for"),
    col("mask_fraction", pa.float32(), "the share of the map's top pixels set to the normalisation mean",
        nullable=False),
    col("p_target", pa.float32(), "p_c, softmax before masking", nullable=False),
    col("p_target_masked", pa.float32(), "p'_c after masking; NaN: the map ranks no pixel (all zero), nothing "
        "masked"),
    col("p_similar", pa.float32(), "p_d before masking", nullable=False),
    col("p_similar_masked", pa.float32(), "p'_d after masking"),
    col("relative_drop", pa.float32(), "the paper's RD = (p_c - p'_c) - (p_d - p'_d): high when the map covers "
        "what tells c from d"),
    col("target_drop_ratio", pa.float32(), "(p_c - p'_c) / p_c, the target-only drop"),
    col("target_prompt", pa.string(), "a CLIP product's (`method = clip-<set>-<cam>`) target prompt; null for a "
        "classifier's and INTR's rows"),
    col("predicted_prompt", pa.string(), "the predicted prompt (CLIP)"),
    col("similar_prompt", pa.string(), "the most similar class's prompt (CLIP)"),
])

PARTS = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("part_id", pa.int32(), "the part's label", nullable=False),
    col("part", pa.string(), "the part's name", nullable=False),
    col("area", pa.int64(), "pixels of the label image at the image's own size", nullable=False),
    col("fraction", pa.float32(), "of all labelled (specimen) pixels", nullable=False),
    col("x0", pa.int32(), "bounding box [x0, x1) x [y0, y1); -1 when absent", nullable=False),
    col("y0", pa.int32(), "bounding box", nullable=False),
    col("x1", pa.int32(), "bounding box", nullable=False),
    col("y1", pa.int32(), "bounding box", nullable=False),
    col("cx", pa.float32(), "centroid; NaN when absent"),
    col("cy", pa.float32(), "centroid; NaN when absent"),
    col("frame_index", pa.int32(), "position in the species' pseudo-video (0: the support)", nullable=False),
    col("chunk", pa.int32(), "the pseudo-video it was tracked in (`segment.chunk_size`)", nullable=False),
])

RETRIEVAL = pa.schema([
    col("image_id", pa.string(), "the query image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("part_id", pa.int32(), "the part (`segment.retrieval.part`)", nullable=False),
    col("part", pa.string(), "its name", nullable=False),
    col("round_trip_iou", pa.float32(), "IoU of the part back on the support after the round trip through the "
        "query (two passes: support to query, a fresh query to support); 0 when the first pass finds nothing"),
])

PROMPT_HEADS = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("class", pa.int32(), "the class whose prompt queried the image (`explain.target`)", nullable=False),
    col("species", pa.string(), "the species of that class", nullable=False),
    col("target_source", pa.string(), "`true` (the image's species) or `predicted`", nullable=False),
    col("rank", pa.int32(), "0: the most important head (trait)", nullable=False),
    col("head", pa.int32(), "the last block's head at that rank", nullable=False),
    col("probability", pa.float32(), "of the class, with the heads ranked above removed", nullable=False),
    col("ranked", pa.bool_(), "the model predicts the class explained (always, for a predicted target): the "
        "authors rank heads only then, and the trait summaries leave the other images out "
        "(`prompt_cam.misclassified`)", nullable=False),
])

CODES = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("phylo_codes", pa.list_(pa.int16()), "row-major over (position, level): code k = levels * position + "
        "level", nullable=False),
    col("nonphylo_codes", pa.list_(pa.int16()), "the non-phylogenetic codes", nullable=False),
    col("reconstruction_error", pa.float32(), "mean |h - h'| of the encoder features", nullable=False),
])

SPECIES_DISTANCES = pa.schema([
    col("species_a", pa.string(), "one species of the pair", nullable=False),
    col("species_b", pa.string(), "the other", nullable=False),
    col("subset", pa.string(), "the images the histograms came from: `held_out`", nullable=False),
    col("codes", pa.string(), "`phylo` (levels 0..level, cumulative) or `nonphylo`", nullable=False),
    col("level", pa.int32(), "the tree level", nullable=False),
    col("code_distance", pa.float64(), "mean Jensen-Shannon distance of the code histograms over code positions",
        nullable=False),
    col("tree_distance", pa.float64(), "path length between the two species' groups at that level (a group is "
        "the first ancestor at or above the level's cut)", nullable=False),
])

CAM_PARTS = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("alpha", pa.float32(), "null: the base method (and Prompt-CAM, INTR); a value: Finer-CAM"),
    col("head", pa.int32(), "Prompt-CAM's or INTR's head; null for a CAM"),
    col("rank", pa.int32(), "the head's rank for the image (0: the most important trait); null for a CAM and "
        "INTR"),
    col("part_id", pa.int32(), "the SST part", nullable=False),
    col("part", pa.string(), "its name", nullable=False),
    col("mass_share", pa.float32(), "share of the map's mass inside the part, on the canvas; NaN: no mass"),
    col("peak_in_part", pa.bool_(), "the map's maximum lies in the part", nullable=False),
    col("area_share", pa.float32(), "share of the image the part covers, to read the mass against",
        nullable=False),
])

MAP_TRUTH = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("alpha", pa.float32(), "as in `cam_parts`"),
    col("head", pa.int32(), "as in `cam_parts`"),
    col("rank", pa.int32(), "as in `cam_parts`"),
    col("trait_energy", pa.float32(), "share of the map's mass inside the true trait; NaN: no mass"),
    col("trait_pointing", pa.bool_(), "the map's maximum lies in the trait", nullable=False),
    col("trait_area", pa.float32(), "share of the image the trait covers (a blind map's energy)",
        nullable=False),
])

PART_TRUTH = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("frame_index", pa.int32(), "0: the species' reference (its mask is the prompt)", nullable=False),
    col("part_id", pa.int32(), "the part", nullable=False),
    col("part", pa.string(), "its name", nullable=False),
    col("intersection_pixels", pa.int64(), "of the part's own SST mask and its true pixels, on the canvas "
        "(where the masks are stored)", nullable=False),
    col("union_pixels", pa.int64(), "their union (\"union\" is an SQL keyword)", nullable=False),
    col("truth_pixels", pa.int64(), "the true part's area (0: absent)", nullable=False),
    col("iou", pa.float32(), "intersection over union; NaN where the part is in neither"),
])

SPECIES_TRAITS = pa.schema([
    col("species", pa.string(), "the species", nullable=False),
    col("alpha", pa.float32(), "as in `cam_parts`"),
    col("rank", pa.int32(), "Prompt-CAM: the head rank summarised; null otherwise"),
    col("head", pa.int32(), "INTR: the head summarised (its heads are not ranked); null otherwise"),
    col("part_id", pa.int32(), "the part named", nullable=False),
    col("part", pa.string(), "the part holding the map's peak in most of the species' images; for "
        "`interventions-<model>`, the part whose removal lowers the margin most, on average", nullable=False),
    col("consistency", pa.float32(), "share of the species' images with the peak there (the largest margin drop "
        "there)", nullable=False),
    col("mass_share", pa.float32(), "mean share of the map's mass in the part; null for interventions"),
    col("area_share", pa.float32(), "mean share of the image the part covers", nullable=False),
    col("n", pa.int64(), "images", nullable=False),
    col("delta_margin", pa.float32(), "interventions: the mean change of p_target - p_similar when the part is "
        "removed (`part_effects`); null for a map"),
])

PART_EFFECTS = pa.schema([
    col("image_id", pa.string(), "the image", nullable=False),
    col("species", pa.string(), "its species", nullable=False),
    col("part_id", pa.int32(), "the SST part removed", nullable=False),
    col("part", pa.string(), "its name", nullable=False),
    col("area_share", pa.float32(), "share of the model's input the part covers (0: the image has no such part)",
        nullable=False),
    col("target", pa.int32(), "the class explained (as in `cams`)", nullable=False),
    col("target_species", pa.string(), "its species (a CLIP concept prompt: the species it stands for)"),
    col("similar_species", pa.string(), "the class most similar to the target, as in `cams`"),
    col("fill", pa.string(), "what filled the removed part: `background` (the specimen's, the median colour "
        "outside every SST part) or `mean` (the normalisation mean)", nullable=False),
    col("delta_logit", pa.float32(), "change of the target's logit, part removed minus intact; NaN: no such part"),
    col("delta_probability", pa.float32(), "change of the target's probability"),
    col("delta_margin", pa.float32(), "change of p_target - p_similar: below 0, the part told the target from "
        "its closest class"),
])

EVALUATION = pa.schema([
    col("method", pa.string(), "as the other tables name it (classifier, gradcam, layercam, promptcam, intr, "
        "`clip-<set>[-<cam>]`, sst, phylonn); `uniform` is a map blind to the trait, the baseline of `trait_energy`",
        nullable=False),
    col("alpha", pa.float32(), "Finer-CAM's comparison strength; null for a base CAM and the rest"),
    col("metric", pa.string(), "the score (see above)", nullable=False),
    col("subset", pa.string(), "the images: `train`, `val` / `held_out`; `all`, `cryptic` (the cryptic sister "
        "pairs); `queries` (SST, the references left out; with a SAM 2 trained here also `trained` and "
        "`held_out`)", nullable=False),
    col("level", pa.string(), "a tree level (Phylo-NN)"),
    col("part", pa.string(), "a per-part metric's part"),
    col("value", pa.float64(), "null where undefined (a Spearman against a level with one group)"),
    col("n", pa.int64(), "the images (or species pairs) it is over", nullable=False),
])

TABLES: dict[str, pa.Schema] = {"images": IMAGES, "failures": FAILURES, "parts": PARTS, "retrieval": RETRIEVAL,
                                 "cams": CAMS, "prompt_heads": PROMPT_HEADS, "codes": CODES, "species_distances": SPECIES_DISTANCES,
                                 "cam_parts": CAM_PARTS, "map_truth": MAP_TRUTH, "part_truth": PART_TRUTH,
                                 "species_traits": SPECIES_TRAITS, "part_effects": PART_EFFECTS,
                                 "evaluation": EVALUATION}
#: Hive partition column (a low-cardinality filter) per table; it is part of the path, not the file.
PARTITIONS: dict[str, str] = {"failures": "stage", "cams": "method", "cam_parts": "method", "map_truth": "method",
                               "species_traits": "method", "part_effects": "model",
                               "evaluation": "stage"}
#: What each table holds, one row of it, and when it is written.
TABLE_DOCS: dict[str, str] = {
    "images": "One row per usable image of the manifest (ingest); the manifest's taxonomy ranks follow as "
              "extra columns.",
    "failures": "One row per image (or species) a step could not use, and why; nothing already written is lost.",
    "parts": "Per image and SST part: its size, bounding box and centroid, from the label image.",
    "retrieval": "Per query image, SST's round-trip score of one part (`segment.retrieval.part`); rank with "
                 "`select *, rank() over (partition by species order by round_trip_iou desc) from retrieval`.",
    "cams": "Per image and map (method, alpha): the class explained and faithfulness as the Finer-CAM paper "
            "measures it.",
    "prompt_heads": "Per image, every last-block head of Prompt-CAM by rank, for the class whose prompt "
                    "queried it.",
    "codes": "Per image, its Phylo-NN codes.",
    "species_distances": "Per species pair, code kind and level: code distance against tree distance "
                         "(held-out specimens).",
    "cam_parts": "Per image, map and SST part: where the map points, on the segmentation canvas. Works on any "
                 "collection: the parts are SST's.",
    "map_truth": "Per image and map, the map against the true trait mask (when the manifest names one).",
    "part_truth": "Per image and part, SST's mask against the true part (when the manifest names truth masks).",
    "species_traits": "Per species and map (alpha; Prompt-CAM's head rank; INTR's head): the part its maps "
                      "point at most.",
    "part_effects": "Per image, model and SST part: what removing the part does to the model's answer (FunnyBirds' "
                    "single deletion). The model's own evidence, on any collection: the parts are SST's.",
    "evaluation": "Every score, against the truth (stage `evaluate`: SST's `miou` and per-part `iou`, "
                  "`retrieval_auc` and `round_trip_iou_<intact|damaged|absent>`; each map's `trait_energy` and "
                  "`trait_pointing`; `trait_part`, the share of species whose named part (`species_traits`) is "
                  "the one their trait is on; `relative_drop@0.05` over the images every map ranks and "
                  "`relative_drop_own@0.05` over each map's own; `zero_shot_accuracy`), of training (stage of "
                  "the model: `top1_accuracy`, `pair_accuracy` on the held-out images of each cryptic pair (subset "
                  "`<a> | <b>`), Phylo-NN's `head_accuracy`; stage `sst_finetune`: `miou_untuned` "
                  "and `miou_tuned`) and of the codes (stage `phylonn`: `spearman_<phylo|nonphylo>_codes_vs_tree`"
                  " per level).",
}


def outputs_markdown() -> str:
    """docs/outputs.md: every table, what it holds, its partition and its columns with their documentation.

    Examples
    --------
    >>> outputs_markdown().splitlines()[0]
    '# Result tables'
    """
    intro = ("Written by `python scripts/write_outputs_doc.py` from `traitpipe/store/schemas.py`; a test keeps "
             "the two equal. Every table is Parquet under `results/tables/<table>/`, one file per shard "
             "(`part-<shard>.parquet`, under `<column>=<value>/` for a partitioned table), and every row also "
             "carries " + " and ".join(f"`{f.name}` ({f.metadata[b'doc'].decode()})" for f in RUN_COLUMNS)
             + '. Query them with `traitpipe query "select ..."` (DuckDB, one view per table).')
    lines = ["# Result tables", "", textwrap.fill(intro, 110), ""]
    for name, schema in TABLES.items():
        partition = f" Partitioned by `{PARTITIONS[name]}`." if name in PARTITIONS else ""
        lines += [f"## `{name}`", "", textwrap.fill(TABLE_DOCS[name] + partition, 110)]
        lines += ["", "| column | type | null | what |", "| --- | --- | --- | --- |"]
        lines += [f"| `{f.name}` | {f.type} | {'yes' if f.nullable else 'no'} | {f.metadata[b'doc'].decode()} |"
                  for f in schema]
        lines.append("")
    return "\n".join(lines)


def table_schema(table: str, extra: list[str] | None = None) -> pa.Schema:
    """Schema of a table as written: its columns, any ``extra`` string columns, then run columns.

    Parameters
    ----------
    table : str
        A key of :data:`TABLES`.
    extra : list of str or None
        Extra nullable string columns (e.g. the manifest's taxonomy ranks on ``images``).

    Returns
    -------
    pyarrow.Schema
    """
    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    fields = list(TABLES[table]) + [pa.field(name, pa.string()) for name in extra or []]
    return pa.schema(fields + RUN_COLUMNS)
