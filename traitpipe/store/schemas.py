"""Every Parquet table's schema, in one place.

A table is written one file per shard (``tables/<table>/[<partition>=<value>/]part-<shard>.parquet``);
``PARTITIONS`` names the hive partition column of the tables that have one.
Every table also carries ``run_id`` and ``config_hash`` (added by the writer).
"""

from __future__ import annotations

import pyarrow as pa

RUN_COLUMNS = [pa.field("run_id", pa.string(), nullable=False), pa.field("config_hash", pa.string(), nullable=False)]

IMAGES = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("label", pa.int32(), nullable=False),
    pa.field("specimen_id", pa.string()),
    pa.field("mask", pa.string()),
    # truth masks of the image (collection.columns.parts_truth / trait_truth): part labels, the trait's pixels
    pa.field("parts_truth", pa.string()),
    pa.field("trait_truth", pa.string()),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),
])

FAILURES = pa.schema([
    pa.field("path", pa.string()),
    pa.field("image_id", pa.string()),
    pa.field("species", pa.string()),
    pa.field("shard", pa.string()),
    pa.field("row", pa.int64()),
    pa.field("reason", pa.string(), nullable=False),
])

CAMS = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("alpha", pa.float32()),  # null: the base method; a value: Finer-CAM
    pa.field("target", pa.int32(), nullable=False),
    # the species the target stands for: the class's species; for a CLIP prompt, the species it names (null for a
    # concept that no one species carries)
    pa.field("target_species", pa.string()),
    # which class the map explains: "true" (the image's species, a class of the model) or "predicted"
    # (explain.target: predicted, or a species the model does not know)
    pa.field("target_source", pa.string(), nullable=False),
    pa.field("predicted", pa.int32(), nullable=False),
    pa.field("predicted_species", pa.string()),
    pa.field("compared", pa.list_(pa.int32())),  # Finer-CAM's compared classes, most similar first
    # faithfulness (Finer-CAM Eq. 10): the target c and its most similar class d (rank 1 by |y - y_c|),
    # softmax before and after the map's top mask_fraction pixels are set to the normalisation mean
    pa.field("similar_class", pa.int32(), nullable=False),  # d (a bare "similar" is an SQL keyword)
    pa.field("similar_species", pa.string()),
    pa.field("mask_fraction", pa.float32(), nullable=False),
    pa.field("p_target", pa.float32(), nullable=False),  # p_c
    pa.field("p_target_masked", pa.float32()),  # p'_c; NaN: the map ranks no pixel (all zero), nothing masked
    pa.field("p_similar", pa.float32(), nullable=False),  # p_d
    pa.field("p_similar_masked", pa.float32()),  # p'_d
    pa.field("relative_drop", pa.float32()),  # the paper's RD = (p_c - p'_c) - (p_d - p'_d)
    pa.field("target_drop_ratio", pa.float32()),  # (p_c - p'_c) / p_c, the target-only drop
    # a CLIP's classes are text prompts (methods clip-<prompt set>-<cam>): the target's, prediction's and similar
    # class's prompt; null for a classifier's and INTR's rows
    pa.field("target_prompt", pa.string()),
    pa.field("predicted_prompt", pa.string()),
    pa.field("similar_prompt", pa.string()),
])

PARTS = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("part_id", pa.int32(), nullable=False),
    pa.field("part", pa.string(), nullable=False),
    pa.field("area", pa.int64(), nullable=False),  # pixels at the image's own size
    pa.field("fraction", pa.float32(), nullable=False),  # of all labelled (specimen) pixels
    pa.field("x0", pa.int32(), nullable=False),  # bounding box [x0, x1) x [y0, y1); -1 when absent
    pa.field("y0", pa.int32(), nullable=False),
    pa.field("x1", pa.int32(), nullable=False),
    pa.field("y1", pa.int32(), nullable=False),
    pa.field("cx", pa.float32()),  # centroid; NaN when absent
    pa.field("cy", pa.float32()),
    pa.field("frame_index", pa.int32(), nullable=False),  # position in the species' pseudo-video (0 = support)
    pa.field("chunk", pa.int32(), nullable=False),
])

RETRIEVAL = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("part_id", pa.int32(), nullable=False),
    pa.field("part", pa.string(), nullable=False),
    pa.field("round_trip_iou", pa.float32()),  # IoU of the part back on the support after [support, query, support]
])

PROMPT_HEADS = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("class", pa.int32(), nullable=False),  # the class whose prompt queried the image (explain.target)
    pa.field("species", pa.string(), nullable=False),
    pa.field("target_source", pa.string(), nullable=False),  # "true" (the image's species) or "predicted"
    pa.field("rank", pa.int32(), nullable=False),  # 0 = most important head (trait)
    pa.field("head", pa.int32(), nullable=False),
    pa.field("probability", pa.float32(), nullable=False),  # of the class, with the heads ranked above removed
    # the model predicts the class explained (always, for a predicted target): the authors rank heads only then,
    # and the trait summaries leave the other images out (prompt_cam.misclassified)
    pa.field("ranked", pa.bool_(), nullable=False),
])

CODES = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("phylo_codes", pa.list_(pa.int16()), nullable=False),  # row-major over (position, level)
    pa.field("nonphylo_codes", pa.list_(pa.int16()), nullable=False),
    pa.field("reconstruction_error", pa.float32(), nullable=False),  # mean |h - h'| of the encoder features
])

SPECIES_DISTANCES = pa.schema([
    pa.field("species_a", pa.string(), nullable=False),
    pa.field("species_b", pa.string(), nullable=False),
    pa.field("subset", pa.string(), nullable=False),  # the images the histograms came from: "held_out"
    pa.field("codes", pa.string(), nullable=False),  # "phylo" (levels 0..level, cumulative) or "nonphylo"
    pa.field("level", pa.int32(), nullable=False),
    pa.field("code_distance", pa.float64(), nullable=False),  # mean Jensen-Shannon distance over code positions
    pa.field("tree_distance", pa.float64(), nullable=False),  # between the two species' ancestors at that level
])

#: Where one map (a method and alpha, or one Prompt-CAM head) points, per SST part of one image; on the canvas.
CAM_PARTS = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("alpha", pa.float32()),  # null: the base method (and Prompt-CAM); a value: Finer-CAM
    pa.field("head", pa.int32()),  # Prompt-CAM's or INTR's head; null for a CAM
    pa.field("rank", pa.int32()),  # the head's rank for the image (0 = most important trait); null for a CAM
    pa.field("part_id", pa.int32(), nullable=False),
    pa.field("part", pa.string(), nullable=False),
    pa.field("mass_share", pa.float32()),  # of the map's mass inside the part; NaN: the map has no mass
    pa.field("peak_in_part", pa.bool_(), nullable=False),  # the map's maximum lies in the part
    pa.field("area_share", pa.float32(), nullable=False),  # of the image's pixels the part covers
])

#: One map against the image's true trait mask (collection.columns.trait_truth), at the image's size.
MAP_TRUTH = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("alpha", pa.float32()),
    pa.field("head", pa.int32()),
    pa.field("rank", pa.int32()),
    pa.field("trait_energy", pa.float32()),  # share of the map's mass inside the trait; NaN: no mass
    pa.field("trait_pointing", pa.bool_(), nullable=False),  # the map's maximum lies in the trait
    pa.field("trait_area", pa.float32(), nullable=False),  # share of the image the trait covers
])

#: SST's label map of one image against its true part labels (collection.columns.parts_truth).
PART_TRUTH = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("species", pa.string(), nullable=False),
    pa.field("frame_index", pa.int32(), nullable=False),  # 0: the species' reference (its mask is the prompt)
    pa.field("part_id", pa.int32(), nullable=False),
    pa.field("part", pa.string(), nullable=False),
    pa.field("intersection_pixels", pa.int64(), nullable=False),  # on the canvas (where labels are stored)
    pa.field("union_pixels", pa.int64(), nullable=False),  # ("union" is an SQL keyword)
    pa.field("truth_pixels", pa.int64(), nullable=False),  # the true part's area (0: absent)
    pa.field("iou", pa.float32()),  # NaN where the part is in neither map
])

#: Per species and map: the part its maps point at most.
SPECIES_TRAITS = pa.schema([
    pa.field("species", pa.string(), nullable=False),
    pa.field("alpha", pa.float32()),
    pa.field("rank", pa.int32()),  # Prompt-CAM: the head rank summarised; null for a CAM
    pa.field("head", pa.int32()),  # INTR: the head summarised (its heads are not ranked); null otherwise
    pa.field("part_id", pa.int32(), nullable=False),
    pa.field("part", pa.string(), nullable=False),  # the part holding the map's peak in most images
    pa.field("consistency", pa.float32(), nullable=False),  # share of the species' images with the peak there
    pa.field("mass_share", pa.float32()),  # mean share of the map's mass in the part
    pa.field("area_share", pa.float32(), nullable=False),  # mean share of the image the part covers
    pa.field("n", pa.int64(), nullable=False),  # images
])

EVALUATION = pa.schema([
    # the method as the other tables name it (classifier, gradcam, layercam, promptcam, sst, phylonn)
    pa.field("method", pa.string(), nullable=False),
    pa.field("alpha", pa.float32()),  # Finer-CAM's comparison strength; null for a base CAM and the rest
    pa.field("metric", pa.string(), nullable=False),
    pa.field("subset", pa.string(), nullable=False),
    pa.field("level", pa.string()),
    pa.field("part", pa.string()),  # a per-part metric's part
    pa.field("value", pa.float64()),  # null where undefined (a Spearman against a level with one group)
    pa.field("n", pa.int64(), nullable=False),
])

TABLES: dict[str, pa.Schema] = {"images": IMAGES, "failures": FAILURES, "parts": PARTS, "retrieval": RETRIEVAL,
                                 "cams": CAMS, "prompt_heads": PROMPT_HEADS, "codes": CODES, "species_distances": SPECIES_DISTANCES,
                                 "cam_parts": CAM_PARTS, "map_truth": MAP_TRUTH, "part_truth": PART_TRUTH,
                                 "species_traits": SPECIES_TRAITS, "evaluation": EVALUATION}
#: Hive partition column (a low-cardinality filter) per table; it is part of the path, not the file.
PARTITIONS: dict[str, str] = {"failures": "stage", "cams": "method", "cam_parts": "method", "map_truth": "method",
                               "species_traits": "method", "evaluation": "stage"}


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
