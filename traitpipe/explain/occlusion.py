"""Occlusion maps (Zeiler and Fergus, ECCV 2014), through captum's ``Occlusion``: slide a square over the image,
fill it with the normalisation mean, and record how much the target's logit drops; a pixel's value is the mean
drop of the squares that covered it. Model-agnostic, with no gradient: it explains any classifier, at the cost
of one forward pass per square position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from captum.attr import Occlusion
from torch import nn


def occlusion_maps(model: nn.Module, images: torch.Tensor, target: torch.Tensor, *, window: int, stride: int,
                   per_eval: int = 16) -> torch.Tensor:
    """Each image's occlusion map for its target class, on the grid of square positions.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier, in eval mode: (B, 3, H, W) -> logits (B, K).
    images : torch.Tensor, float32, shape (B, 3, H, W)
        Normalised inputs (0 is the normalisation mean, what a square is filled with).
    target : torch.Tensor, int64, shape (B,)
        The explained class of each image.
    window, stride : int
        The square's side and its step, in pixels.
    per_eval : int
        Square positions evaluated in one forward pass (memory against speed; the maps do not change).

    Returns
    -------
    torch.Tensor, float32, shape (B, H // stride, W // stride)
        The drop of the target's logit, averaged over each stride x stride cell, negative drops (occluding
        that raised the logit) set to 0, as a CAM's ReLU does.

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    >>> occlusion_maps(model, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), window=4, stride=4).shape
    torch.Size([2, 2, 2])
    """
    with torch.no_grad():
        drops = Occlusion(model).attribute(images, sliding_window_shapes=(3, window, window),
                                           strides=(3, stride, stride), baselines=0.0, target=target,
                                           perturbations_per_eval=per_eval)
    return F.avg_pool2d(drops[:, :1].float(), stride)[:, 0].clamp(min=0)
