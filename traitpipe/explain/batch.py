"""One explanation step for a batch: maps for every alpha, predictions, faithfulness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from traitpipe.explain.cam import cam_pass, combine_layers, similar_classes
from traitpipe.explain.faithfulness import ConfidenceDrop, confidence_drop


@dataclass
class ExplainedBatch:
    """Results for B images and A alphas.

    Attributes
    ----------
    raw : torch.Tensor, float32, shape (B, A, h, w)
        Raw maps (ReLU, no min-max) at the first target layer's resolution.
    target, predicted : torch.Tensor, int64, shape (B,)
    similar : torch.Tensor, int64, shape (B,)
        The class most similar to the target (rank 1 by ``|y - y_t|``): the paper's d.
    compared : list of torch.Tensor, int64, each (B, n_a)
        Finer-CAM's compared classes per alpha (n_a = 0 for the base method).
    drops : list of ConfidenceDrop, one per alpha
        Faithfulness: p_c, p_d before and after masking each map's top pixels, and
        the paper's relative drop RD (:mod:`traitpipe.explain.faithfulness`).
    """

    raw: torch.Tensor
    target: torch.Tensor
    predicted: torch.Tensor
    similar: torch.Tensor
    compared: list[torch.Tensor]
    drops: list[ConfidenceDrop]


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
        The class to explain per image; -1 entries and None = the predicted class.

    Returns
    -------
    ExplainedBatch
    """
    passes = cam_pass(model, images, layers, method=method, alphas=alphas, target=target, n_compare=n_compare)
    logits, target = passes[0].logits, passes[0].target
    if logits.shape[1] < 2:
        raise ValueError("faithfulness compares the target with its most similar class: the model needs >= 2 classes")
    similar = similar_classes(logits, target, 1)[:, 0]
    probabilities = logits.softmax(1)
    raw, drops = [], []
    for result in passes:
        raw.append(combine_layers(result.raw, tuple(images.shape[2:]), normalize=False))
        shown = combine_layers(result.raw, tuple(images.shape[2:]), normalize=True)
        drops.append(confidence_drop(model, images, shown, target, similar, probabilities=probabilities,
                                     fraction=fraction))
    return ExplainedBatch(raw=torch.stack(raw, 1), target=target, predicted=logits.argmax(1), similar=similar,
                          compared=[p.compared for p in passes], drops=drops)
