"""Where a map points: its mass and peak inside masks, on the image or on the segmentation canvas.

Maps are stored raw (ReLU, no min-max) on the model's patch grid, covering the whole image
resized to the model's input size. These pure functions bring them to a pixel frame and score
them against label masks (SST parts or truth).
"""

from __future__ import annotations

import numpy as np


def resize_maps(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of grid maps to a pixel frame (as pytorch-grad-cam's ``scale_cam_image``).

    Parameters
    ----------
    raw : numpy.ndarray, float, shape (K, h, w)
        K maps on the model's patch grid.
    size : (H, W)

    Returns
    -------
    numpy.ndarray, float32, shape (K, H, W)
        Non-negative where ``raw`` is (bilinear weights are convex).

    The same numbers as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, in NumPy:
    the jobs that only score maps start without importing torch.

    Examples
    --------
    >>> resize_maps(np.ones((2, 2, 2)), (4, 6)).shape
    (2, 4, 6)
    >>> resize_maps(np.array([[[0.0, 4.0]]]), (1, 4))  # pixel centres: edges held, the middle interpolated
    array([[[0., 1., 3., 4.]]], dtype=float32)
    """
    maps = np.asarray(raw, np.float32)
    (y0, y1, wy), (x0, x1, wx) = (_linear_weights(n, m) for n, m in zip(maps.shape[-2:], size))
    rows = maps[..., y0, :] * (1 - wy)[:, None] + maps[..., y1, :] * wy[:, None]
    return (rows[..., x0] * (1 - wx) + rows[..., x1] * wx).astype(np.float32)


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1, int64, (n_out,)) and weights of i1 (float32) of a linear resize with half-pixel
    centres, sources clamped to the edge as PyTorch's ``align_corners=False``."""
    source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), (source - i0).astype(np.float32)


def place_maps(raw: np.ndarray, transform: np.ndarray, size: tuple[int, int], canvas: int) -> np.ndarray:
    """Grid maps on the segmentation canvas, where ``to_canvas`` put the image's labels.

    Parameters
    ----------
    raw : numpy.ndarray, float, shape (K, h, w)
    transform : numpy.ndarray, shape (3,)
        ``(scale, offset_y, offset_x)`` of the image (the label store's ``canvas_transform``).
    size : (H, W)
        The image's size (the label store's ``image_size``).
    canvas : int
        Canvas side.

    Returns
    -------
    numpy.ndarray, float32, shape (K, canvas, canvas)
        Zero outside the image's region.

    Examples
    --------
    >>> column_sums = place_maps(np.ones((1, 2, 2)), np.array([0.5, 0, 8]), (64, 32), 32)[0].sum(axis=0)
    >>> column_sums[[7, 8, 23, 24]]  # a 64x32 image fills columns 8..23 of a 32-pixel canvas
    array([ 0., 32., 32.,  0.], dtype=float32)
    """
    scale, oy, ox = float(transform[0]), int(transform[1]), int(transform[2])
    h, w = max(1, round(int(size[0]) * scale)), max(1, round(int(size[1]) * scale))  # as to_canvas
    placed = np.zeros((raw.shape[0], canvas, canvas), np.float32)
    placed[:, oy:oy + h, ox:ox + w] = resize_maps(raw, (h, w))
    return placed


def mask_scores(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of each map's mass inside each mask, and whether each map's peak lies in it.

    Parameters
    ----------
    maps : numpy.ndarray, float, shape (K, H, W)
        Non-negative maps.
    masks : numpy.ndarray, bool, shape (P, H, W)

    Returns
    -------
    mass : numpy.ndarray, float64, shape (K, P)
        ``sum(map * mask) / sum(map)``; NaN for a map with no mass.
    peak : numpy.ndarray, bool, shape (K, P)
        The map's maximum (its first, in row-major order) lies in the mask; False for a map with no mass
        (it points nowhere).

    Examples
    --------
    >>> maps = np.array([[[0, 1], [0, 3]]], float)
    >>> masks = np.array([[[0, 0], [0, 1]], [[1, 1], [1, 0]]], bool)
    >>> mass, peak = mask_scores(maps, masks)
    >>> mass.round(2).tolist(), peak.tolist()
    ([[0.75, 0.25]], [[True, False]])
    """
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    inside = np.asarray(masks, bool).reshape(len(masks), -1)
    total = flat.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass = (flat @ inside.T.astype(np.float64)) / total[:, None]
    peak = inside[:, flat.argmax(axis=1)].T & (total > 0)[:, None]
    return mass, peak


def input_masks(labels: np.ndarray, transform: np.ndarray, size: tuple[int, int], part_ids, side: int) -> np.ndarray:
    """Part masks on a model's square input, from a label map on the canvas: the inverse of :func:`place_maps`.

    The image's region of the canvas is resized (nearest) to ``side`` x ``side``, as the model's input is the
    whole image resized.

    Parameters
    ----------
    labels : numpy.ndarray, integer, shape (canvas, canvas)
        Part labels on the canvas (the label store's ``part_labels``).
    transform : numpy.ndarray, shape (3,)
        ``(scale, offset_y, offset_x)`` of the image.
    size : (H, W)
        The image's size.
    part_ids : sequence of int, length P
    side : int
        The model's input side.

    Returns
    -------
    numpy.ndarray, bool, shape (P, side, side)

    Examples
    --------
    >>> labels = np.zeros((8, 8), np.uint8); labels[2:4, 4:6] = 1  # a 4 x 8 image fills rows 2..5 of the canvas
    >>> input_masks(labels, np.array([1.0, 2, 0]), (4, 8), [1], 4)[0].astype(int)
    array([[0, 0, 1, 0],
           [0, 0, 1, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 0]])
    """
    scale, oy, ox = float(transform[0]), int(transform[1]), int(transform[2])
    h, w = max(1, round(int(size[0]) * scale)), max(1, round(int(size[1]) * scale))  # as to_canvas
    ys = oy + np.minimum(((np.arange(side) + 0.5) * h / side).astype(np.int64), h - 1)
    xs = ox + np.minimum(((np.arange(side) + 0.5) * w / side).astype(np.int64), w - 1)
    region = labels[np.ix_(ys, xs)]
    return np.stack([region == p for p in part_ids]) if len(part_ids) else np.zeros((0, side, side), bool)
