"""Predicted part masks against the true labels: pixel overlaps per part, and the IoU summaries built from them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def part_overlap(masks: np.ndarray, truth: np.ndarray, parts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union, in pixels, of each part's predicted mask and its true pixels.

    Parameters
    ----------
    masks : numpy.ndarray, bool, shape (P, H, W)
        Part ``parts[k]``'s own predicted mask (SST's per-part masks may overlap).
    truth : numpy.ndarray, integer, shape (H, W)
        The true label map (0 = background).
    parts : sequence of int, length P
        The part labels the masks are of.

    Returns
    -------
    intersection, union : numpy.ndarray, int64, shape (P,)

    Examples
    --------
    The predicted masks of parts 1 and 2 overlap on the middle pixels.

    >>> masks = np.array([[[1, 1, 1, 0]], [[0, 1, 1, 0]], [[0, 0, 0, 0]]], bool)
    >>> truth = np.array([[1, 2, 2, 0]])
    >>> part_overlap(masks, truth, [1, 2, 3])
    (array([1, 2, 0]), array([3, 2, 0]))
    """
    inter = np.array([np.count_nonzero(mask & (truth == p)) for mask, p in zip(masks, parts)], np.int64)
    union = np.array([np.count_nonzero(mask | (truth == p)) for mask, p in zip(masks, parts)], np.int64)
    return inter, union


def part_masks(masks: np.ndarray, mask_parts: Sequence[int], parts: Sequence[int]) -> np.ndarray:
    """Masks of ``mask_parts`` laid out along ``parts``: an empty mask for a part not among them.

    Parameters
    ----------
    masks : numpy.ndarray, bool, shape (P', H, W)
    mask_parts : sequence of int, length P'
    parts : sequence of int, length P

    Returns
    -------
    numpy.ndarray, bool, shape (P, H, W)

    Examples
    --------
    >>> part_masks(np.ones((1, 1, 2), bool), [2], [1, 2]).astype(int).tolist()
    [[[0, 0]], [[1, 1]]]
    """
    where = {p: k for k, p in enumerate(mask_parts)}
    out = np.zeros((len(parts), *masks.shape[1:]), bool)
    for k, p in enumerate(parts):
        if p in where:
            out[k] = masks[where[p]]
    return out


def dataset_iou(intersection: np.ndarray, union: np.ndarray) -> float:
    """IoU over a set of images: summed intersections over summed unions (NaN where the union is empty).

    Examples
    --------
    >>> dataset_iou(np.array([1, 3]), np.array([2, 4]))
    0.6666666666666666
    """
    total = int(np.sum(union))
    return float(np.sum(intersection)) / total if total else float("nan")
