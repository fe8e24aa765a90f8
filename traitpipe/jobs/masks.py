"""Masks the jobs read: a species' reference (support image and labels) and the truth masks scored against."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from traitpipe.collection.images import MAX_PIXELS, ImageError, check_size, read_image, stored_orientation
from traitpipe.jobs.images import load_pixels
from traitpipe.segment.parts import check_support_mask
from traitpipe.collection.references import reference_origin


def load_support(config: dict, species: str, chosen: dict[str, tuple[str, str]],
                 names: dict[int, str] | None) -> tuple[np.ndarray, np.ndarray, str, dict[int, str]]:
    """A species' support image (H, W, 3) uint8, its checked labels (H, W) uint8, its image file and part names.

    Raises ImageError when the species has no usable reference: none found (the reason names where it was
    looked for), unreadable, or failing :func:`~traitpipe.segment.parts.check_support_mask`.
    """
    if species not in chosen:
        collection = config["collection"]
        where = reference_origin(config["segment"]["masks"], collection["root"], collection["columns"]["mask"])
        raise ImageError(f"no reference mask for species {species!r} (looked in {where})")
    image_file, mask_file = chosen[species]
    try:
        support = read_image(image_file, max_pixels=config["collection"]["max_pixels"])
    except ImageError as error:  # every image of the species fails for this: say it is the reference's fault
        raise ImageError(f"reference image unreadable ({image_file}: {error}); segmenting species {species!r} "
                         "needs it") from None
    stored_size, orientation = stored_orientation(image_file)
    mask = read_mask(mask_file)
    parts = names or {int(v): f"part_{int(v)}" for v in np.unique(mask) if v > 0}
    try:
        labels = check_support_mask(mask, parts, mask_file, support.shape[:2], stored_size=stored_size,
                                    orientation=orientation, image=image_file)
    except ValueError as error:  # a bad reference fails its species (failures rows), not the whole shard
        raise ImageError(str(error)) from None
    return support, labels, image_file, parts


def read_mask(file: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A reference mask as stored (2-D labels); :class:`ImageError` when it cannot be read or declares more than
    ``max_pixels`` (checked before decoding)."""
    try:
        with Image.open(file) as image:
            check_size(image, max_pixels)
            return np.array(image)
    except ImageError as error:
        raise ImageError(f"reference mask {file}: {error}") from None
    except (OSError, ValueError) as error:
        raise ImageError(f"unreadable reference mask {file}: {error}") from None


def read_truth(file: str, size: tuple[int, int], what: str) -> np.ndarray:
    """A truth mask (2-D labels) of an image of ``size`` (H, W); :class:`ImageError` naming the file, what it
    holds (``what``: "parts", "trait") and both sizes when it cannot be read or has another size."""
    mask = read_mask(file)
    if mask.ndim != 2 or mask.shape != tuple(size):
        raise ImageError(f"{what} truth mask {file} is {'x'.join(map(str, mask.shape))} but its image is "
                         f"{size[0]}x{size[1]} (HxW, 2-D labels): a truth mask must have its image's size")
    return mask


def truth_images(config: dict, rows: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray], pd.DataFrame,
                                                               list[str]]:
    """The images of some ``images`` rows that have a readable true part mask (``parts_truth``).

    Returns
    -------
    frames : list of numpy.ndarray, uint8, each (H_i, W_i, 3)
    truths : list of numpy.ndarray, integer, each (H_i, W_i)
    kept : pandas.DataFrame
        Their rows, in order.
    skipped : list of str
        Why a truth mask could not be used.
    """
    if "parts_truth" not in rows:
        return [], [], rows.iloc[:0], []
    rows = rows[rows["parts_truth"].fillna("") != ""]
    pixels, ok, _ = load_pixels(config, rows)
    frames, truths, kept, skipped = [], [], [], []
    for image, (index, row) in zip(pixels, rows[ok].iterrows()):
        try:
            truths.append(read_truth(row["parts_truth"], image.shape[:2], "parts"))
        except ImageError as error:
            skipped.append(str(error))
            continue
        frames.append(image)
        kept.append(index)
    return frames, truths, rows.loc[kept], skipped
