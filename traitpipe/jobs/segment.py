"""Segment step for one shard: SST per species, label maps to Zarr, the ``parts`` table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from traitpipe.collection.images import ImageError
from traitpipe.jobs.common import (job_arguments, load_pixels, load_support, read_rows, references, start_job,
                                   write_failures)
from traitpipe.jobs.models import sam2_model
from traitpipe.models.device import resolve_device, resolve_precision
from traitpipe.segment.finetune import round_trip_iou
from traitpipe.segment.parts import part_statistics, to_canvas
from traitpipe.segment.references import part_names
from traitpipe.segment.sst import propagate
from traitpipe.store.maps import map_writer
from traitpipe.store.provenance import provenance
from traitpipe.store.schemas import FAILURES
from traitpipe.store.tables import write_table


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job segment --config RUN_CONFIG --images T --manifest F --maps Z --parts T --failures T
    [--tuned F] [--retrieval T]``.

    The reference images and masks the manifest names are inputs of the rule (so editing one reruns
    this step); the job finds each species' pair in the manifest it is handed.
    """
    args = job_arguments("segment", paths=("images", "manifest", "maps", "parts", "failures"),
                         optional=("tuned", "retrieval")).parse_args(argv)
    config = start_job(args)
    settings = config["segment"]
    device = resolve_device(config["device"])
    names = part_names(settings["parts"], config["collection"]["root"])
    chosen, where = references(config, args.manifest)
    rows = read_rows(args.images)
    pixels, ok, failures = load_pixels(config, rows)
    rows = rows[ok].reset_index(drop=True)
    root = Path(config["collection"]["root"])
    files = [str(Path(p) if Path(p).is_absolute() else root / p) for p in rows["path"]]

    predictor, model = sam2_model(config, device, args.tuned)
    random = model["random_weights"]
    precision = resolve_precision(settings["precision"], device)
    prov = provenance(config, device=str(device), precision=precision, models={"sam2": model})
    retrieval_part = settings["retrieval"]["part"]

    canvas = settings["canvas"]
    placed = np.zeros((len(rows), canvas, canvas), np.uint8)
    transforms = np.zeros((len(rows), 3), np.float32)
    frame_index = np.full(len(rows), -1, np.int32)
    chunk_index = np.full(len(rows), -1, np.int32)
    part_rows, retrieval_rows, failed = [], [], [failures]
    for species, group in tqdm(rows.groupby("species", sort=True), desc="segment",
                               unit="species", file=sys.stderr):
        index = group.index.to_numpy()
        try:
            support, support_labels, image_file, parts = load_support(config, species, chosen, where, names)
        except ImageError as error:
            failed.append(pd.DataFrame([{"path": r.path, "image_id": r.image_id, "species": r.species,
                                         "shard": r.shard, "row": r.row, "reason": str(error)}
                                        for r in rows.loc[index].itertuples()], columns=FAILURES.names))
            continue
        queries = [i for i in index if files[i] != image_file]  # the reference is frame 0, not a query
        maps, chunk_of = propagate(predictor, [support] + [pixels[i] for i in queries], support_labels,
                                   chunk_size=settings["chunk_size"], with_chunks=True, precision=precision)
        for i in index:
            frame = 1 + queries.index(i) if i in queries else 0
            labels = maps[frame]
            placed[i], transforms[i] = to_canvas(labels, canvas)
            frame_index[i], chunk_index[i] = frame, chunk_of[frame]
            for part in part_statistics(labels, parts):
                part_rows.append({"image_id": rows.at[i, "image_id"], "species": species, **part,
                                  "frame_index": frame, "chunk": chunk_of[frame]})
        if retrieval_part is not None:
            part_id = _part_id(retrieval_part, parts)
            for i in queries:
                retrieval_rows.append({"image_id": rows.at[i, "image_id"], "species": species, "part_id": part_id,
                                       "part": parts[part_id], "round_trip_iou": round_trip_iou(
                                           predictor, support, pixels[i], support_labels, part_id,
                                           precision=precision)})

    done = frame_index >= 0
    sizes = rows[["height", "width"]].to_numpy(np.int32)
    attrs = {"provenance": prov, "parts": {str(k): v for k, v in (names or {}).items()}, "canvas": canvas,
             "random_weights": random,
             "note": "labels on a fixed canvas; canvas pixel = image pixel * scale + offset "
                     "(canvas_transform = scale, offset_y, offset_x); image_size = (height, width)"}
    with map_writer(args.maps, rows["image_id"][done].tolist(),
                    {"labels": ((canvas, canvas), "uint8", ("y", "x")),
                     "image_size": ((2,), "int32", ("hw",)),
                     "canvas_transform": ((3,), "float32", ("transform",))}, attrs) as group:
        if done.any():
            group["labels"][:] = placed[done]
            group["image_size"][:] = sizes[done]
            group["canvas_transform"][:] = transforms[done]
    write_table(pd.DataFrame(part_rows, columns=PARTS_COLUMNS), args.parts,
                "parts", prov)
    if retrieval_part is not None:
        write_table(pd.DataFrame(retrieval_rows, columns=RETRIEVAL_COLUMNS),
                    args.retrieval, "retrieval", prov)
    write_failures(args.failures, pd.concat(failed, ignore_index=True), prov)
    print(f"segment: {int(done.sum())} images segmented, "
          f"{sum(len(f) for f in failed)} failures{' (random SAM 2 weights)' if random else ''}", file=sys.stderr)


def _part_id(part: int | str, parts: dict[int, str]) -> int:
    """The label of ``segment.retrieval.part`` (a label or a part name)."""
    for part_id, name in parts.items():
        if part in (part_id, name):
            return part_id
    raise ValueError(f"segment.retrieval.part {part!r} is not a declared part ({parts})")


RETRIEVAL_COLUMNS = ["image_id", "species", "part_id", "part", "round_trip_iou"]
PARTS_COLUMNS = ["image_id", "species", "part_id", "part", "area", "fraction", "x0", "y0", "x1", "y1", "cx", "cy",
                 "frame_index", "chunk"]
