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


def check_support_mask(mask: np.ndarray, part_names: Mapping[int, str], where: str,
                       size: tuple[int, int]) -> np.ndarray:
    """A reference mask ready for tracking.

    Parameters
    ----------
    mask : numpy.ndarray, integer, shape (h, w)
        As read from its file (a 2-D label image).
    part_names : mapping of int to str
        Declared parts.
    where : str
        The file, for error messages.
    size : (H, W)
        Size of the image it labels; another size is resized with nearest neighbour.

    Returns
    -------
    numpy.ndarray, uint8, shape (H, W)

    Raises
    ------
    ValueError
        Labels outside the declared parts (naming file and labels), or no part at all.
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
    if mask.shape != tuple(size):
        mask = np.array(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
    return mask


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


def from_canvas(placed: np.ndarray, transform: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Undo :func:`to_canvas`: the label map at the image's own (H, W)."""
    scale, oy, ox = float(transform[0]), int(transform[1]), int(transform[2])
    h, w = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    crop = placed[oy:oy + h, ox:ox + w]
    return np.array(Image.fromarray(crop).resize((size[1], size[0]), Image.NEAREST))
