"""Part interventions: remove one part of each image and measure how the model's answer changes.

This is the single-deletion protocol of FunnyBirds (Hesse et al., ICCV 2023), applied to SST's parts: the
model's own evidence of which part it uses, measured with forward passes only, so it needs no truth and runs on
any collection. A part is removed by filling its pixels either with the normalisation mean (0 in normalised
units, as the faithfulness mask does) or with the specimen's own background (the median colour of the pixels
outside every part).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from traitpipe.explain.cam import similar_classes

#: How a removed part is filled.
FILLS = ("mean", "background")


@dataclass(frozen=True)
class PartEffects:
    """What removing each part does to a batch of B images and P parts.

    Attributes
    ----------
    delta_logit, delta_probability, delta_margin : torch.Tensor, float32, shape (B, P)
        The change, part removed minus intact, of the target's logit, of its probability, and of the margin
        ``p_target - p_similar``. NaN for a part the image does not have (nothing to remove).
    target_logit, margin : torch.Tensor, float32, shape (B,)
        The intact image's target logit and margin.
    target, similar : torch.Tensor, int64, shape (B,)
        The class explained and the class it is compared with.
    """

    delta_logit: torch.Tensor
    delta_probability: torch.Tensor
    delta_margin: torch.Tensor
    target_logit: torch.Tensor
    margin: torch.Tensor
    target: torch.Tensor
    similar: torch.Tensor


def background_colour(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The median colour of each image's pixels outside every part (its background), in the images' units.

    Parameters
    ----------
    images : torch.Tensor, float32, shape (B, 3, H, W)
    masks : torch.Tensor, bool, shape (B, P, H, W)

    Returns
    -------
    torch.Tensor, float32, shape (B, 3)
        0 (the normalisation mean) for an image with no background pixel.

    Examples
    --------
    >>> images = torch.zeros(1, 3, 2, 2); images[0, :, 0, 0] = 5.0; images[0, :, 1, 1] = 1.0
    >>> masks = torch.zeros(1, 1, 2, 2, dtype=torch.bool); masks[0, 0, 0, 0] = True
    >>> background_colour(images, masks)  # the median of 0, 0 and 1
    tensor([[0., 0., 0.]])
    """
    outside = ~masks.any(dim=1)
    colours = torch.zeros(len(images), 3, dtype=images.dtype, device=images.device)
    for i in range(len(images)):
        if outside[i].any():
            colours[i] = images[i][:, outside[i]].median(dim=1).values
    return colours


def part_effects(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, masks: torch.Tensor,
                 target: torch.Tensor, similar: torch.Tensor | None = None, fill: str = "mean") -> PartEffects:
    """Remove each part in turn, in one batched forward pass per part (and one of the intact images), with no
    gradient.

    Parameters
    ----------
    model : callable
        Normalised images (B, 3, H, W) -> logits (B, K), in eval mode.
    images : torch.Tensor, float32, shape (B, 3, H, W)
        Normalised images.
    masks : torch.Tensor, bool, shape (B, P, H, W)
        Each image's part masks on the model's input grid.
    target : torch.Tensor, int64, shape (B,)
        The explained class; -1: the class the model predicts for the intact image.
    similar : torch.Tensor, int64, shape (B,), or None
        The class it is compared with; None: the one most similar to the target on the intact image, as in
        ``cams`` (:func:`traitpipe.explain.cam.similar_classes`).
    fill : {"mean", "background"}
        What fills a removed part: the normalisation mean (0), or the image's :func:`background_colour`.

    Returns
    -------
    PartEffects

    Examples
    --------
    A model that reads only the top-left pixel's red value: removing the part there changes its logit.

    >>> model = lambda x: torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], dim=1)
    >>> images = torch.ones(1, 3, 2, 2)
    >>> masks = torch.zeros(1, 2, 2, 2, dtype=torch.bool); masks[0, 0, 0, 0] = True; masks[0, 1, 1, 1] = True
    >>> effects = part_effects(model, images, masks, torch.tensor([0]), torch.tensor([1]), fill="mean")
    >>> effects.delta_logit.tolist()
    [[-1.0, 0.0]]
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    colour = background_colour(images, masks) if fill == "background" else torch.zeros(len(images), 3,
                                                                                         device=images.device)

    def scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities = logits.softmax(dim=1)
        p_target, p_similar = (probabilities.gather(1, c[:, None])[:, 0] for c in (target, similar))
        return logits.gather(1, target[:, None])[:, 0], p_target, p_target - p_similar

    with torch.no_grad():
        intact = model(images).float()
        target = torch.where(target >= 0, target, intact.argmax(1))
        similar = similar_classes(intact, target, 1)[:, 0] if similar is None else similar
        logit, probability, margin = scores(intact)
        deltas = [[], [], []]
        for p in range(masks.shape[1]):
            part = masks[:, p, None]
            removed = torch.where(part, colour[:, :, None, None].to(images.dtype), images)
            for found, after, before in zip(deltas, scores(model(removed).float()), (logit, probability, margin)):
                found.append(after - before)
    present = masks.flatten(2).any(dim=2)
    nan = torch.tensor(float("nan"), device=images.device)
    delta_logit, delta_probability, delta_margin = (torch.where(present, torch.stack(d, dim=1), nan) for d in deltas)
    return PartEffects(delta_logit, delta_probability, delta_margin, logit, margin, target, similar)
