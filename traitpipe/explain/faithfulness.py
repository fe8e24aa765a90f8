"""Faithfulness of a map: how much the model's confidence drops when its top pixels are hidden."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` most activated pixels of each map.

    Parameters
    ----------
    maps : torch.Tensor, float, shape (B, H, W)
    fraction : float in (0, 1]

    Returns
    -------
    torch.Tensor, bool, shape (B, H, W)
        ``ceil(fraction * H * W)`` True pixels per map.
    """
    flat = maps.flatten(1)
    k = max(1, math.ceil(fraction * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.topk(k, dim=1).indices, True)
    return mask.view_as(maps)


@torch.no_grad()
def faithfulness_drop(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                      probability: torch.Tensor | None = None, fraction: float = 0.05,
                      fill: float = 0.0) -> torch.Tensor:
    """Relative drop of the target class's probability when the map's top pixels are masked.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in eval mode.
    images : torch.Tensor, float, shape (B, 3, H, W)
        Normalised model inputs.
    maps : torch.Tensor, float, shape (B, h, w)
        Maps of any resolution (resized bilinearly to H x W for ranking pixels).
    target : torch.Tensor, int64, shape (B,)
    probability : torch.Tensor, float, shape (B,), or None
        The target's softmax probability on the unmasked images, if already known.
    fraction : float
        Fraction of pixels masked (the paper's 5%).
    fill : float
        Value of masked pixels in normalised space (0 = the normalisation mean).

    Returns
    -------
    torch.Tensor, float32, shape (B,)
        ``(p - p') / p``; higher means the map found what the model uses.
    """
    if maps.shape[1:] != images.shape[2:]:
        maps = F.interpolate(maps[:, None].float(), size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    target = target.to(images.device)[:, None]
    if probability is None:
        probability = model(images).float().softmax(1).gather(1, target)[:, 0]
    masked = images.masked_fill(top_fraction_mask(maps, fraction)[:, None], fill)
    after = model(masked).float().softmax(1).gather(1, target)[:, 0]
    probability = probability.to(after.device)
    return ((probability - after) / probability.clamp(min=1e-12)).float()
