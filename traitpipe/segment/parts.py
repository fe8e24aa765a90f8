"""Label maps: part statistics, support-mask checks, the fixed canvas of the map stores."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image


def part_statistics(labels: np.ndarray, part_names: Mapping[int, str]) -> list[dict]:
    """Per-part numbers of one label map.

    Parameters
    ----------
    labels : numpy.ndarray, uint8, shape (H, W)
        0 = background.
    part_names : mapping of int to str
        The declared parts; every declared part gets a row (area 0 when absent).

    Returns
    -------
    list of dict
        ``part_id``, ``part``, ``area`` (pixels), ``fraction`` (of all labelled pixels),
        ``x0, y0, x1, y1`` (bounding box, inclusive-exclusive; -1 when absent),
        ``cx, cy`` (centroid in pixels; NaN when absent).
    """
    counts = np.bincount(labels.ravel(), minlength=max(part_names, default=0) + 1)
    total = counts[1:].sum()
    rows = []
    for part_id, name in sorted(part_names.items()):
        area = int(counts[part_id]) if part_id < len(counts) else 0
        row = {"part_id": part_id, "part": name, "area": area, "fraction": area / total if total else 0.0,
               "x0": -1, "y0": -1, "x1": -1, "y1": -1, "cx": float("nan"), "cy": float("nan")}
        if area:
            ys, xs = np.nonzero(labels == part_id)
            row.update(x0=int(xs.min()), y0=int(ys.min()), x1=int(xs.max()) + 1, y1=int(ys.max()) + 1,
                       cx=float(xs.mean()), cy=float(ys.mean()))
        rows.append(row)
    return rows


#: EXIF orientation -> the PIL transpose that displays the image upright (as ``ImageOps.exif_transpose``).
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


def orient(labels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to a label map, as the image reader applies it to the image.

    Parameters
    ----------
    labels : numpy.ndarray, uint8, shape (h, w)
    orientation : int
        EXIF orientation tag, 1..8 (1 and unknown values: unchanged).

    Returns
    -------
    numpy.ndarray, uint8, shape (h, w), or (w, h) for orientations 5..8

    Examples
    --------
    >>> orient(np.array([[1, 2, 3]], np.uint8), 6)  # stored sideways, shown rotated 90 degrees clockwise
    array([[1],
           [2],
           [3]], dtype=uint8)
    """
    if orientation not in ORIENTATIONS:
        return labels
    return np.array(Image.fromarray(labels).transpose(ORIENTATIONS[orientation]))


def check_support_mask(mask: np.ndarray, part_names: Mapping[int, str], where: str, size: tuple[int, int], *,
                       stored_size: tuple[int, int] | None = None, orientation: int = 1,
                       image: str = "its image") -> np.ndarray:
    """A reference mask ready for tracking, in the orientation its image is shown in.

    Parameters
    ----------
    mask : numpy.ndarray, integer, shape (h, w)
        As read from its file (a 2-D label image).
    part_names : mapping of int to str
        Declared parts.
    where : str
        The mask file, for error messages.
    size : (H, W)
        Size of the image it labels as displayed (EXIF orientation applied), as traitpipe reads it.
    stored_size : (H, W) or None
        Size of the image as stored, before its EXIF orientation (default: ``size``).
    orientation : int
        The image's EXIF orientation (1 = none).
    image : str
        The image file, for error messages.

    Returns
    -------
    numpy.ndarray, uint8, shape (H, W)
        A mask of the displayed size is taken as it is; a mask of the stored size gets
        the image's orientation. (Where the two sizes are equal, the displayed form wins.)

    Raises
    ------
    ValueError
        Labels outside the declared parts (naming file and labels), no part at all, or a
        size that is neither the image's displayed nor its stored size (naming both files
        and all sizes): a mask is never stretched to fit.
    """
    if mask.ndim != 2:
        raise ValueError(f"reference mask {where} has shape {mask.shape}: expected a 2-D label image")
    present = {int(v) for v in np.unique(mask)} - {0}
    unknown = sorted(present - set(part_names))
    if unknown:
        raise ValueError(f"reference mask {where} has labels {unknown} that are not declared parts "
                         f"(segment.parts declares {sorted(part_names)})")
    if not present:
        raise ValueError(f"reference mask {where} is empty: it labels no part")
    mask = mask.astype(np.uint8)
    size, stored_size = tuple(size), tuple(stored_size or size)
    if mask.shape == size:
        return mask
    if mask.shape == stored_size:
        return orient(mask, orientation)
    stored = f", stored {stored_size[0]}x{stored_size[1]} before EXIF orientation {orientation}" \
        if stored_size != size else ""
    raise ValueError(f"reference mask {where} is {mask.shape[0]}x{mask.shape[1]} (HxW) but image {image} is "
                     f"{size[0]}x{size[1]}{stored}: a mask must have its image's size (it is never stretched)")


def to_canvas(labels: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Place a label map on a square canvas: scaled to fit (nearest neighbour), centred, padded with 0.

    Parameters
    ----------
    labels : numpy.ndarray, uint8, shape (H, W)
    canvas : int
        Canvas side.

    Returns
    -------
    placed : numpy.ndarray, uint8, shape (canvas, canvas)
    transform : numpy.ndarray, float32, shape (3,)
        ``(scale, offset_y, offset_x)``: canvas pixel = image pixel * scale + offset.
        To put a map back on its image, crop ``[oy:oy+round(H*scale), ox:ox+round(W*scale)]``
        and resize to (H, W) with nearest neighbour.
    """
    height, width = labels.shape
    scale = canvas / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    oy, ox = (canvas - h) // 2, (canvas - w) // 2
    placed = np.zeros((canvas, canvas), np.uint8)
    placed[oy:oy + h, ox:ox + w] = np.array(Image.fromarray(labels).resize((w, h), Image.NEAREST))
    return placed, np.array([scale, oy, ox], np.float32)


def from_canvas(placed: np.ndarray, transform: np.ndarray, size: tuple[int, int],
                out: tuple[int, int] | None = None) -> np.ndarray:
    """Undo :func:`to_canvas`: the label map of an image of (H, W) ``size``, at that size or at ``out`` (the size
    it is displayed at, say)."""
    scale, oy, ox = float(transform[0]), int(transform[1]), int(transform[2])
    h, w = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    crop = placed[oy:oy + h, ox:ox + w]
    out = size if out is None else out
    return np.array(Image.fromarray(crop).resize((out[1], out[0]), Image.NEAREST))
