"""Images to model input batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_batch(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Resize (bilinear, antialiased) and normalise images into one batch.

    Parameters
    ----------
    images : sequence of numpy.ndarray, uint8, each (H_i, W_i, 3)
    size : int
        Side of the square model input.
    mean, std : sequence of 3 floats
        Per-channel normalisation in [0, 1] units.

    Returns
    -------
    torch.Tensor, float32, shape (B, 3, size, size)
    """
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32)
    for i, image in enumerate(images):
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        if pixels.shape[2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i] = pixels[0]
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (out - mean_t) / std_t


def augment(batch: torch.Tensor, generator: torch.Generator, shift: float = 0.0625,
            crop_scale: float | None = None) -> torch.Tensor:
    """Random horizontal flip and translation of a (B, 3, H, W) batch.

    ``crop_scale`` None: translate by up to ``shift`` of the side (reflect padding).
    A float (e.g. 240/224, Prompt-CAM's recipe): resize to ``crop_scale`` times the
    side, then take a random crop of the original size.
    """
    flip = torch.rand(len(batch), generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    if crop_scale is not None:
        side = round(batch.shape[-1] * crop_scale)
        padded = F.interpolate(batch, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        pad = (side - batch.shape[-1]) // 2
    else:
        pad = max(1, int(round(shift * batch.shape[-1])))
        padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 2 * pad + 1, (len(batch), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + batch.shape[2], dx:dx + batch.shape[3]]
    return out
