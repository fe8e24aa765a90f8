"""One-shot fine-tuning of SAM 2 by cycle consistency, and trait retrieval by round-trip IoU.

The round trip is the pseudo-video [support, query, support]: the support mask is
tracked to the query and back. Fine-tuning minimises the BCE between the returned
support logits and the support's true mask, tuning only decoder-side modules
(METHODS.md section 1; the paper's own fine-tuning code was never published).
Retrieval ranks query images by the IoU of the returned mask of one part.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from traitpipe.models.device import autocast
from traitpipe.segment.sst import labels_from_logits, new_state, track

#: Modules tuned by default: the mask decoder and the memory attention.
TUNED = ("sam_mask_decoder", "memory_attention")


def round_trip_logits(predictor, support: np.ndarray, query: np.ndarray, support_labels: np.ndarray):
    """Logits of every part on the support after a round trip through the query, with gradients.

    Parameters
    ----------
    predictor : SAM2VideoPredictor
    support, query : numpy.ndarray, uint8, (H, W, 3)
    support_labels : numpy.ndarray, uint8, (H_0, W_0)

    Returns
    -------
    logits : torch.Tensor, float32, shape (n_parts, h, w)
        At the model's mask resolution (image_size / 4); differentiable with
        respect to the predictor's trainable parameters.
    part_ids : list of int
    """
    parts = [int(v) for v in np.unique(support_labels) if v > 0]
    state = new_state(predictor, [support, query, support])
    state["cached_features"] = {}  # computed again outside inference mode, so autograd may save them
    # SAM 2's public methods run under inference mode; their undecorated bodies keep the graph
    add_new_mask = type(predictor).add_new_mask.__wrapped__
    propagate_in_video = type(predictor).propagate_in_video.__wrapped__
    with torch.enable_grad(), autocast(predictor.device):
        for part in parts:
            add_new_mask(predictor, state, frame_idx=0, obj_id=part, mask=torch.from_numpy(support_labels == part))
        *_, (_, _, logits) = propagate_in_video(predictor, state)
    return logits[:, 0].float(), parts


def _drop_inference_caches(predictor) -> None:
    """Replace tensors that SAM 2 modules cached under inference mode (e.g. rotary ``freqs_cis``)
    with normal copies, so autograd may save them."""
    for module in predictor.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_inference():
                setattr(module, name, value.clone())


def _low_res_targets(support_labels: np.ndarray, parts: Sequence[int], size: int) -> torch.Tensor:
    """(n_parts, size, size) float targets: each part's mask, area-averaged to the logits' resolution."""
    masks = torch.stack([torch.from_numpy(support_labels == p).float() for p in parts])[:, None]
    return F.interpolate(masks, size=(size, size), mode="area")[:, 0]


def finetune(predictor, examples: Sequence[tuple[np.ndarray, np.ndarray, Sequence[np.ndarray]]], *, steps: int,
             lr: float = 1e-5, weight_decay: float = 0.01, modules: Sequence[str] = TUNED, seed: int = 0,
             progress: bool = True) -> list[float]:
    """Tune decoder-side modules of SAM 2 in place by the cycle-consistent round-trip loss.

    Parameters
    ----------
    predictor : SAM2VideoPredictor
    examples : sequence of (support, support_labels, queries)
        Per species: the support image (H, W, 3) uint8, its labels (H, W) uint8 and its query images.
    steps : int
        Optimiser steps; each draws one species and one of its queries.
    lr, weight_decay : float
        AdamW settings.
    modules : sequence of str
        Names of the predictor's sub-modules to tune; everything else stays frozen.
    seed : int

    Returns
    -------
    list of float
        The loss of every step.
    """
    rng = np.random.default_rng(seed)
    _drop_inference_caches(predictor)
    tuned = [p for name in modules for p in getattr(predictor, name).parameters()]
    for p in predictor.parameters():
        p.requires_grad_(False)
    for p in tuned:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(tuned, lr=lr, weight_decay=weight_decay)
    usable = [e for e in examples if len(e[2])]
    if not usable:
        raise ValueError("fine-tuning needs at least one species with a reference mask and a query image")
    losses = []  # the predictor stays in eval mode: SAM 2's train mode expects its training data pipeline
    for _ in tqdm(range(steps), desc="fine-tune SAM 2", unit="step", disable=not progress, file=sys.stderr):
        support, labels, queries = usable[int(rng.integers(len(usable)))]
        query = queries[int(rng.integers(len(queries)))]
        logits, parts = round_trip_logits(predictor, support, query, labels)
        target = _low_res_targets(labels, parts, logits.shape[-1]).to(logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for p in predictor.parameters():
        p.requires_grad_(True)
    return losses


def round_trip_iou(predictor, support: np.ndarray, query: np.ndarray, support_labels: np.ndarray, part: int) -> float:
    """IoU of one part's mask on the support after the round trip [support, query, support].

    Returns NaN when the part is absent from the support mask.
    """
    truth = support_labels == part
    if not truth.any():
        return float("nan")
    *_, (_, part_ids, logits, size) = track(predictor, [support, query, support], truth.astype(np.uint8) * part)
    back = labels_from_logits(logits, part_ids, size) == part
    return float((back & truth).sum() / (back | truth).sum())
