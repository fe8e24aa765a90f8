"""Segment step for one shard: SST per species, label images and each part's own mask to Zarr, the ``parts``
table."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from tqdm import tqdm

from traitpipe.collection.images import ImageError
from traitpipe.jobs.images import ImageInputs, ReadAhead, failure_rows, read_rows
from traitpipe.jobs.masks import load_support, read_mask
from traitpipe.jobs.step import Step
from traitpipe.segment.backends import load_segmenter
from traitpipe.segment.parts import part_statistics, to_canvas
from traitpipe.collection.references import part_names
from traitpipe.segment.sst import Frame, Subset
from traitpipe.traits.overlap import part_masks
from traitpipe.store.maps import background_writes, keep_images, map_writer, ome_label_attrs


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job segment --config RUN_CONFIG --images T [--reference SPECIES IMAGE MASK].. --maps Z
    --parts T --failures T [--tuned F] [--trained F] [--retrieval T]``.

    The reference images and masks of the shard's species are inputs of the rule (so editing one
    reruns this step), handed over as one ``--reference`` per species.
    """
    step = Step("segment", argv, paths=("images", "maps", "parts", "failures"), optional=("tuned", "trained", "retrieval"),
                references=True)
    args, config, device = step.args, step.config, step.device
    settings = config["segment"]
    step.checkpoint("segment")  # its sha256, when the config gives one, before any image or SAM 2 is loaded
    names = part_names(settings["parts"], config["collection"]["root"])
    rows = read_rows(args.images)
    images = ImageInputs(config, rows)
    files, groups = images.files, list(rows.groupby("species", sort=True))
    # each species' queries (its images but the reference, frame 0), read once, ahead of SAM 2, in the order it
    # tracks them; the round trip, when asked for, reads them again through a stream of its own
    queries_of = {species: [i for i in group.index if files[i] != args.reference[species][0]]
                  for species, group in groups if species in args.reference}
    order, workers = [i for queries in queries_of.values() for i in queries], config["loader"]["workers"]
    tracked = ReadAhead(images, order, workers)

    segmenter = load_segmenter(settings, device, args.tuned, args.trained)
    random = segmenter.description["random_weights"]
    prov = step.record(precision=segmenter.precision, models={"sam2": segmenter.description})
    retrieval_part = settings["retrieval"]["part"]
    round_trips = ReadAhead(images, order, workers) if retrieval_part is not None else None

    canvas, sizes = settings["canvas"], rows[["height", "width"]].to_numpy(np.int32)
    done = np.zeros(len(rows), bool)
    part_rows, retrieval_rows, failed, found = [], [], [], dict(names or {})
    mask_parts = sorted(names) if names else reference_parts(args.reference)
    attrs = {"provenance": prov, "canvas": canvas, "random_weights": random, "mask_parts": mask_parts,
             "note": "labels on a fixed canvas; canvas pixel = image pixel * scale + offset "
                     "(canvas_transform = scale, offset_y, offset_x); image_size = (height, width). part_masks: "
                     "each part's own mask (its logits > 0; parts may overlap), along mask_parts; part_labels "
                     "gives a pixel covered by several masks to the part with the highest logit"}
    with map_writer(args.maps, rows["image_id"].tolist(),
                    {"part_labels": ((canvas, canvas), "uint8", ("y", "x")),
                     "part_masks": ((len(mask_parts), canvas, canvas), "bool", ("part", "y", "x")),
                     "image_size": ((2,), "int32", ("hw",)),
                     "canvas_transform": ((3,), "float32", ("transform",))}, attrs) as store:
        # one species' maps at a time: written while SAM 2 tracks the next species
        with background_writes(store, depth=1) as write:
            for species, members in tqdm(groups, desc="segment", unit="species", file=sys.stderr):
                index = members.index.to_numpy()  # a range: the rows are in species order
                try:
                    support, support_labels, image_file, parts = load_support(config, species, args.reference,
                                                                              names)
                    found.update(parts)  # undeclared parts (segment.parts: null) are named from the reference masks
                except ImageError as error:
                    failed.append(failure_rows(rows.loc[index], str(error)))
                    continue
                keep = partial(place_frames, canvas=canvas, mask_parts=mask_parts, names=parts)
                try:
                    placed, queries, unread = _track(segmenter, support, support_labels, tracked, images,
                                                     queries_of[species], keep)
                except ImageError as error:  # an image changed between two reads: its species fails alone
                    failed.append(failure_rows(rows.loc[index], f"segmenting {species}: {error}"))
                    continue
                failed.append(failure_rows(rows.loc[list(unread)], np.array(list(unread.values()), dtype=object)))
                frame_of = {i: 1 + k for k, i in enumerate(queries)} | {i: 0 for i in index if files[i] == image_file}
                labels = np.zeros((len(index), canvas, canvas), np.uint8)
                masks = np.zeros((len(index), len(mask_parts), canvas, canvas), bool)
                transforms = np.zeros((len(index), 3), np.float32)
                for i, frame in frame_of.items():
                    k = i - index[0]
                    labels[k], masks[k] = placed.labels[frame], placed.masks[frame]
                    transforms[k] = placed.transforms[frame]
                    done[i] = True
                    part_rows += [{"image_id": rows.at[i, "image_id"], "species": species, **part,
                                   "frame_index": frame, "chunk": placed.chunks[frame]} for part in placed.parts[frame]]
                write("image_size", index[0], sizes[index])
                write("canvas_transform", index[0], transforms)
                write("part_masks", index[0], masks)
                write("part_labels", index[0], labels)  # last: it is written while SAM 2 tracks the next species
                if retrieval_part is not None:
                    scores, broke = _round_trips(segmenter, round_trips, rows, queries, support, support_labels,
                                                 _part_id(retrieval_part, parts), parts)
                    retrieval_rows += scores
                    failed += broke
        keep_images(store, done)  # the rows of images not segmented leave the store
        store.attrs.update({"parts": {str(k): v for k, v in sorted(found.items())}, **ome_label_attrs(found)})
    step.write("parts", part_rows, args.parts)
    if retrieval_part is not None:
        step.write("retrieval", retrieval_rows, args.retrieval)
    step.write_failures(pd.concat(failed, ignore_index=True) if failed else failure_rows(rows.iloc[:0], ""))
    step.finish(f"{int(done.sum())} images segmented, "
                f"{sum(len(f) for f in failed)} failures{' (random SAM 2 weights)' if random else ''}")


@dataclass
class Placed:
    """What the segment job keeps of one species' frames (:func:`place_frames`), per frame in order: the label
    image and the per-part masks on the canvas, the canvas transform, the parts' statistics and the chunk."""

    labels: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    transforms: list[np.ndarray] = field(default_factory=list)
    parts: list[list[dict]] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)


def place_frames(frames: Iterable[Frame], canvas: int, mask_parts: list[int], names: dict[int, str]) -> Placed:
    """Each frame as SST yields it, put on the canvas at once: the job never holds a species' full-size maps.

    Parameters
    ----------
    frames : iterable of traitpipe.segment.sst.Frame
    canvas : int
    mask_parts : list of int
        The store's part axis (the masks are laid out along it).
    names : dict of int to str
        The species' parts, for their statistics.
    """
    placed = Placed()
    for frame in frames:
        labels, transform = to_canvas(frame.labels, canvas)
        masks = part_masks(frame.masks, frame.parts, mask_parts)
        placed.labels.append(labels)
        placed.masks.append(np.stack([to_canvas(m.view(np.uint8), canvas)[0] > 0 for m in masks]))
        placed.transforms.append(transform)
        placed.parts.append(part_statistics(frame.labels, names))
        placed.chunks.append(frame.chunk)
    return placed


def _track(segmenter, support: np.ndarray, support_labels: np.ndarray, stream: ReadAhead, images: ImageInputs,
           queries: list[int], keep: Callable[[Iterable[Frame]], Placed]) -> tuple[Placed, list[int], dict[int, str]]:
    """One species segmented, its queries read from ``stream``, each frame kept by ``keep`` as it comes.

    When a query cannot be read, the rest of the species' queries are read from the stream (to learn which
    others cannot) and the species is tracked again without them, its readable queries read a second time
    from their files: its maps are those of a run without the unreadable images.

    Returns
    -------
    placed : Placed
        Frame 0 the support, then the queries tracked.
    tracked : list of int
        The queries tracked (row indices).
    unread : dict of int to str
        The queries left out, and why.
    """
    try:
        return keep(segmenter.segment(support, support_labels, Subset(stream, queries))), queries, {}
    except ImageError:  # only a query is read here, so there is one
        stream.read_through(queries[-1])
    unread = {i: stream.problems[i] for i in queries if i in stream.problems}
    kept = [i for i in queries if i not in unread]
    return keep(segmenter.segment(support, support_labels, Subset(images, kept))), kept, unread


def reference_parts(references: dict[str, tuple[str, str]]) -> list[int]:
    """The parts labelled in any of the shard's reference masks (undeclared parts: ``segment.parts`` null),
    ascending; a mask that cannot be read adds none (its species fails when it is segmented)."""
    found: set[int] = set()
    for _, mask_file in references.values():
        try:
            found.update(int(v) for v in np.unique(read_mask(mask_file)) if v > 0)
        except ImageError:
            continue
    return sorted(found)


def _round_trips(segmenter, stream: ReadAhead, rows: pd.DataFrame, queries: list[int], support: np.ndarray,
                 support_labels: np.ndarray, part_id: int,
                 parts: dict[int, str]) -> tuple[list[dict], list[pd.DataFrame]]:
    """SST's retrieval score of one species' tracked queries (read from ``stream``): ``retrieval`` records, and
    ``failures`` rows of the queries that broke or changed since they were tracked."""
    scores, failed = [], []
    for i in queries:
        try:
            query = stream[i]
        except ImageError as error:
            failed.append(failure_rows(rows.loc[[i]], f"round trip: {error}"))
            continue
        scores.append({"image_id": rows.at[i, "image_id"], "species": rows.at[i, "species"], "part_id": part_id,
                       "part": parts[part_id],
                       "round_trip_iou": segmenter.round_trip_iou(support, query, support_labels, part_id)})
    return scores, failed


def _part_id(part: int | str, parts: dict[int, str]) -> int:
    """The label of ``segment.retrieval.part`` (a label or a part name)."""
    for part_id, name in parts.items():
        if part in (part_id, name):
            return part_id
    raise ValueError(f"segment.retrieval.part {part!r} is not a declared part ({parts})")

