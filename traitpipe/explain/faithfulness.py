"""Faithfulness of a map: how the model's confidence changes when the map's top pixels are hidden.

The Finer-CAM paper's metric (Eq. 10, "RD@0.05"; docs/methods.md, section 2) is the
RELATIVE confidence drop

    RD = (p_c - p'_c) - (p_d - p'_d),

c the explained (target) class, d the class the model finds most similar to c,
p the softmax probabilities before and p' after the top 5% pixels of the map are
filled with the normalisation mean. A map on what c and d share lowers both and
scores near 0; a map on what tells c from d lowers p_c only. The target-only
drop ``(p_c - p'_c) / p_c`` is kept beside it under a name that says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


#: The faithfulness columns of ``cams``, as :class:`ConfidenceDrop` names them.
DROP_COLUMNS = ("p_target", "p_target_masked", "p_similar", "p_similar_masked", "relative_drop", "target_drop_ratio")


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


@dataclass
class ConfidenceDrop:
    """Probabilities of the target class c and of its most similar class d, before and after masking.

    Every attribute is a float32 tensor of shape (B,). The ``*_masked`` values are NaN
    for a map that ranks no pixel above another (all zero, or constant): it masks nothing.
    """

    p_target: torch.Tensor
    p_target_masked: torch.Tensor
    p_similar: torch.Tensor
    p_similar_masked: torch.Tensor

    @property
    def relative_drop(self) -> torch.Tensor:
        """The paper's RD: ``(p_c - p'_c) - (p_d - p'_d)``, in [-1, 1]; NaN where nothing was masked."""
        return (self.p_target - self.p_target_masked) - (self.p_similar - self.p_similar_masked)

    @property
    def target_drop_ratio(self) -> torch.Tensor:
        """The target-only drop ``(p_c - p'_c) / p_c``; NaN where nothing was masked."""
        return (self.p_target - self.p_target_masked) / self.p_target.clamp(min=1e-12)


@torch.no_grad()
def confidence_drop(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
                    similar: torch.Tensor, *, probabilities: torch.Tensor | None = None, fraction: float = 0.05,
                    fill: float = 0.0) -> ConfidenceDrop:
    """Mask each map's top pixels and re-score the target and its most similar class.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in eval mode.
    images : torch.Tensor, float, shape (B, 3, H, W)
        Normalised model inputs.
    maps : torch.Tensor, float, shape (B, h, w)
        Maps of any resolution (resized bilinearly to H x W for ranking pixels).
    target, similar : torch.Tensor, int64, shape (B,)
        The explained class c and the class d most similar to it
        (:func:`traitpipe.explain.cam.similar_classes`, rank 1).
    probabilities : torch.Tensor, float, shape (B, K), or None
        Softmax over the classes on the unmasked images, if already known.
    fraction : float
        Fraction of pixels masked (the paper's 5%).
    fill : float
        Value of masked pixels in normalised space (0 = the normalisation mean).

    Returns
    -------
    ConfidenceDrop

    Examples
    --------
    A model whose class 0 looks only at the top-left quadrant: a map on that quadrant
    lowers p_0 and raises p_1, so RD is large; a map elsewhere leaves both unchanged.

    >>> class TopLeft(nn.Module):
    ...     def forward(self, x):
    ...         s = x[:, :, :8, :8].mean((1, 2, 3)) * 10
    ...         return torch.stack([s, torch.zeros_like(s)], 1)
    >>> images, right = torch.ones(1, 3, 16, 16), torch.zeros(1, 16, 16)
    >>> right[:, :8, :8] = 1
    >>> zero = torch.zeros(1, dtype=torch.long)
    >>> drop = confidence_drop(TopLeft(), images, right, zero, zero + 1, fraction=0.25)
    >>> round(drop.p_target.item(), 3), round(drop.p_target_masked.item(), 3), round(drop.relative_drop.item(), 3)
    (1.0, 0.5, 1.0)
    """
    if maps.shape[1:] != images.shape[2:]:
        maps = F.interpolate(maps[:, None].float(), size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    target, similar = target.to(images.device)[:, None], similar.to(images.device)[:, None]
    if probabilities is None:
        probabilities = model(images).float().softmax(1)
    probabilities = probabilities.to(images.device).float()
    masked = images.masked_fill(top_fraction_mask(maps, fraction)[:, None], fill)
    after = model(masked).float().softmax(1)
    flat = maps.flatten(1)
    ranks_nothing = (flat.amax(1) <= flat.amin(1))[:, None]
    after = torch.where(ranks_nothing, torch.full_like(after, float("nan")), after)
    return ConfidenceDrop(p_target=probabilities.gather(1, target)[:, 0], p_target_masked=after.gather(1, target)[:, 0],
                          p_similar=probabilities.gather(1, similar)[:, 0],
                          p_similar_masked=after.gather(1, similar)[:, 0])
