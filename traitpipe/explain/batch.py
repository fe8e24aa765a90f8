"""One explanation step for a batch: maps for every alpha, predictions, faithfulness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from traitpipe.explain.cam import cam_pass, combine_layers
from traitpipe.explain.faithfulness import faithfulness_drop


@dataclass
class ExplainedBatch:
    """Results for B images and A alphas.

    Attributes
    ----------
    raw : torch.Tensor, float32, shape (B, A, h, w)
        Raw maps (ReLU, no min-max) at the first target layer's resolution.
    target, predicted : torch.Tensor, int64, shape (B,)
    probability : torch.Tensor, float32, shape (B,)
        Softmax probability of the target class.
    compared : list of torch.Tensor, int64, each (B, n_a)
        Finer-CAM's compared classes per alpha (n_a = 0 for the base method).
    drop : torch.Tensor, float32, shape (B, A)
        Faithfulness: relative drop of the target's probability with the map's top pixels masked.
    """

    raw: torch.Tensor
    target: torch.Tensor
    predicted: torch.Tensor
    probability: torch.Tensor
    compared: list[torch.Tensor]
    drop: torch.Tensor


def explain_batch(model: nn.Module, images: torch.Tensor, layers: Sequence[str], *, method: str,
                  alphas: Sequence[float | None], n_compare: int = 3, fraction: float = 0.05,
                  target: torch.Tensor | None = None) -> ExplainedBatch:
    """Explain a batch with one CAM method at several comparison strengths.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier in eval mode, on the images' device.
    images : torch.Tensor, float32, shape (B, 3, H, W)
    layers : sequence of str
        Target layer names.
    method : str
        A CAM method name (``traitpipe.explain.cam.METHODS``).
    alphas : sequence of float or None
        None = the base method, a float = Finer-CAM with that strength.
    n_compare : int
        Finer-CAM's compared classes.
    fraction : float
        Faithfulness: fraction of pixels masked.
    target : torch.Tensor of int64, shape (B,), or None
        None = the predicted class.

    Returns
    -------
    ExplainedBatch
    """
    passes = cam_pass(model, images, layers, method=method, alphas=alphas, target=target, n_compare=n_compare)
    logits = passes[0].logits
    probability = logits.softmax(1).gather(1, passes[0].target[:, None])[:, 0]
    raw, drops = [], []
    for result in passes:
        raw.append(combine_layers(result.raw, tuple(images.shape[2:]), normalize=False))
        shown = combine_layers(result.raw, tuple(images.shape[2:]), normalize=True)
        drops.append(faithfulness_drop(model, images, shown, result.target, probability=probability,
                                       fraction=fraction))
    return ExplainedBatch(raw=torch.stack(raw, 1), target=passes[0].target, predicted=logits.argmax(1),
                          probability=probability, compared=[p.compared for p in passes],
                          drop=torch.stack(drops, 1))
