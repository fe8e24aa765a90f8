"""Label maps against truth: pixel overlaps per part, and the IoU summaries built from them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def part_overlap(predicted: np.ndarray, truth: np.ndarray, parts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union, in pixels, of each part in two label maps.

    Parameters
    ----------
    predicted, truth : numpy.ndarray, integer, shape (H, W)
        Label maps (0 = background).
    parts : sequence of int, length P
        The part labels to score.

    Returns
    -------
    intersection, union : numpy.ndarray, int64, shape (P,)

    Examples
    --------
    >>> a = np.array([[1, 1, 2, 0]])
    >>> b = np.array([[1, 2, 2, 0]])
    >>> part_overlap(a, b, [1, 2, 3])
    (array([1, 1, 0]), array([2, 2, 0]))
    """
    inter = np.array([np.count_nonzero((predicted == p) & (truth == p)) for p in parts], np.int64)
    union = np.array([np.count_nonzero((predicted == p) | (truth == p)) for p in parts], np.int64)
    return inter, union


def dataset_iou(intersection: np.ndarray, union: np.ndarray) -> float:
    """IoU over a set of images: summed intersections over summed unions (NaN where the union is empty).

    Examples
    --------
    >>> dataset_iou(np.array([1, 3]), np.array([2, 4]))
    0.6666666666666666
    """
    total = int(np.sum(union))
    return float(np.sum(intersection)) / total if total else float("nan")
