"""One-shot fine-tuning of SAM 2 by cycle consistency, and trait retrieval by round-trip IoU.

The round trip runs in TWO independent inference states (docs/methods.md, section 1):

1. pass 1, the pseudo-video [support, query] seeded with the support's true mask,
   predicts the query's mask;
2. pass 2, a fresh state over [query, support] seeded with pass 1's predicted query
   mask, predicts the support's mask.

Pass 2 never sees the support's true mask: it reaches the support only through what
pass 1 found on the query, so a query without the part sends nothing back. (Playing
[support, query, support] as one video leaks the answer: SAM 2 keeps frame 0's true
mask as a conditioning memory for every later frame, and the third frame can copy it.)

Fine-tuning minimises the BCE between pass 2's support logits and the support's true
mask, tuning only decoder-side modules (the paper's own fine-tuning code was never
published), and keeps the weights whose loss is lowest on set-aside queries. Retrieval ranks query images by the IoU of one part's returned mask.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from traitpipe.models.device import autocast
from traitpipe.segment.sst import frame_masks, new_state, track

#: Modules tuned by default: the memory attention, through which SST carries the support's parts to a query.
#: On the demo's held-out species (SAM 2 trained here), tuning the mask decoder as well, or the decoder alone,
#: lowered SST's mIoU where the memory attention alone left it about where it was (measured once, when the
#: score still counted the tuned queries; the demo's miou_untuned and miou_tuned say where it stands now).
TUNED = ("memory_attention",)


def _seeded_logits(predictor, frames: Sequence[np.ndarray], seeds: dict[int, torch.Tensor],
                   precision: str) -> torch.Tensor:
    """Logits of every seeded object on the last frame of a fresh pseudo-video, with gradients.

    ``seeds`` maps object id -> frame 0 mask: (H_0, W_0) bool, or (S, S) float at the
    model's ``image_size`` S, which SAM 2 uses as given (so gradients reach it).
    Returns float32 (n_objects, S / 4, S / 4).
    """
    state = new_state(predictor, frames)
    state["cached_features"] = {}  # computed again outside inference mode, so autograd may save them
    # SAM 2's public methods run under inference mode; their undecorated bodies keep the graph
    add_new_mask = type(predictor).add_new_mask.__wrapped__
    propagate_in_video = type(predictor).propagate_in_video.__wrapped__
    with torch.enable_grad(), autocast(predictor.device, precision):
        for obj_id, mask in seeds.items():
            add_new_mask(predictor, state, frame_idx=0, obj_id=obj_id, mask=mask)
        *_, (_, _, logits) = propagate_in_video(predictor, state)
    return logits[:, 0].float()


def round_trip_logits(predictor, support: np.ndarray, query: np.ndarray, support_labels: np.ndarray, *,
                      precision: str = "auto"):
    """Logits of every part on the support after a round trip through the query, with gradients.

    Pass 1 ([support, query], seeded with ``support_labels``) predicts the query's part
    logits; they are upsampled to the model's input size and binarised at 0 with a
    straight-through estimator (forward: the hard mask SAM 2 would be given; backward:
    the gradient of the sigmoid). Pass 2, a fresh state over [query, support] seeded
    with those masks, predicts the support's logits.

    Where the gradient flows: from the returned logits back through pass 2 (mask decoder,
    memory attention, memory encoder and the object pointer of the seeded query frame),
    through the straight-through seed into pass 1's query logits, and on through pass 1's
    memory attention and mask decoder. The image encoder's features are inputs to both
    passes; what is tuned is chosen by the caller (:func:`finetune`).

    Parameters
    ----------
    predictor : SAM2VideoPredictor
    support, query : numpy.ndarray, uint8, (H, W, 3)
    support_labels : numpy.ndarray, uint8, (H_0, W_0)
    precision : str
        "auto" (bfloat16 on CUDA, the SST authors' setting), "float32" or "bfloat16".

    Returns
    -------
    logits : torch.Tensor, float32, shape (n_parts, h, w)
        At the model's mask resolution (image_size / 4).
    part_ids : list of int
    """
    parts = [int(v) for v in np.unique(support_labels) if v > 0]
    forward = _seeded_logits(predictor, [support, query],
                             {p: torch.from_numpy(support_labels == p) for p in parts}, precision)
    size = predictor.image_size
    upsampled = F.interpolate(forward[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    soft = upsampled.sigmoid()
    seeds = (upsampled > 0).float() + (soft - soft.detach())  # hard forward, sigmoid gradient backward
    back = _seeded_logits(predictor, [query, support], dict(zip(parts, seeds)), precision)
    return back, parts


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


def round_trip_loss(predictor, support: np.ndarray, query: np.ndarray, support_labels: np.ndarray, *,
                    precision: str = "auto") -> torch.Tensor:
    """The cycle-consistent loss of one (support, query) pair: BCE between the support's round-trip logits
    (:func:`round_trip_logits`) and its true part masks at the logits' resolution. A scalar tensor with
    gradients; it needs no label on the query."""
    logits, parts = round_trip_logits(predictor, support, query, support_labels, precision=precision)
    target = _low_res_targets(support_labels, parts, logits.shape[-1]).to(logits.device)
    return F.binary_cross_entropy_with_logits(logits, target)


def finetune(predictor, examples: Sequence[tuple[np.ndarray, np.ndarray, Sequence[np.ndarray]]], *, steps: int,
             lr: float = 1e-5, weight_decay: float = 0.01, modules: Sequence[str] = TUNED, seed: int = 0,
             checks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (), check_every: int = 25,
             progress: bool = True, precision: str = "auto") -> dict:
    """Tune decoder-side modules of SAM 2 in place by the cycle-consistent round-trip loss, keeping the
    weights whose round-trip loss on set-aside pairs is lowest.

    The guard needs no labels beyond the references: every ``check_every`` steps (and before the first) the
    mean round-trip loss of the ``checks`` pairs, queries the tuning never drew, is measured, and the weights
    of the lowest are kept at the end. When tuning never lowers it, the model is left as it was: fine-tuning
    that does not carry over to unseen queries is refused rather than applied.

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
    checks : sequence of (support, support_labels, query)
        Set-aside pairs for the guard; empty: no guard, the last step's weights are kept.
    check_every : int
        Steps between guard measurements.
    progress : bool
    precision : str
        "auto" (bfloat16 on CUDA, the SST authors' setting), "float32" or "bfloat16".

    Returns
    -------
    dict
        ``losses``: the loss of every step (float); ``checks``: ``{"step", "loss"}`` per guard measurement;
        ``kept_step``: the step whose weights were kept (0: none of the tuning, ``steps``: all of it).
    """
    rng = np.random.default_rng(seed)
    _drop_inference_caches(predictor)
    tuned_modules = {name: getattr(predictor, name) for name in modules}
    tuned = [p for module in tuned_modules.values() for p in module.parameters()]
    for p in predictor.parameters():
        p.requires_grad_(False)
    for p in tuned:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(tuned, lr=lr, weight_decay=weight_decay)
    usable = [e for e in examples if len(e[2])]
    if not usable:
        raise ValueError("fine-tuning needs at least one species with a reference mask and a query image")

    def snapshot() -> dict:
        return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in tuned_modules.items()}

    def guard(step: int) -> None:
        loss = float(np.mean([round_trip_loss(predictor, support, query, labels, precision=precision).item()
                              for support, labels, query in checks]))
        history.append({"step": step, "loss": loss})
        if loss < best["loss"]:
            best.update(loss=loss, step=step, weights=snapshot())

    history, best = [], {"loss": np.inf, "step": steps, "weights": None}
    losses = []  # the predictor stays in eval mode: SAM 2's train mode expects its training data pipeline
    for step in tqdm(range(steps), desc="fine-tune SAM 2", unit="step", disable=not progress, file=sys.stderr):
        if checks and step % check_every == 0:
            guard(step)
        support, labels, queries = usable[int(rng.integers(len(usable)))]
        loss = round_trip_loss(predictor, support, queries[int(rng.integers(len(queries)))], labels,
                               precision=precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if checks:
        guard(steps)
        for name, weights in best["weights"].items():
            tuned_modules[name].load_state_dict(weights)
    for p in predictor.parameters():
        p.requires_grad_(True)
    return {"losses": losses, "checks": history, "kept_step": best["step"]}


def round_trip_iou(predictor, support: np.ndarray, query: np.ndarray, support_labels: np.ndarray, part: int, *,
                   precision: str = "auto") -> float:
    """IoU of one part's mask on the support after the two-pass round trip through the query.

    Pass 1 tracks the part from the support to the query; pass 2, a fresh pseudo-video
    [query, support], tracks pass 1's query mask back. A query on which pass 1 finds
    nothing sends nothing back: IoU 0.

    Returns NaN when the part is absent from the support mask.
    """
    truth = support_labels == part
    if not truth.any():
        return float("nan")
    *_, (_, part_ids, logits, size) = track(predictor, [support, query], truth.astype(np.uint8) * part,
                                            precision=precision)
    found, _ = frame_masks(logits, part_ids, size)  # one part: its mask, labelled ``part``
    if not found.any():
        return 0.0
    *_, (_, part_ids, logits, size) = track(predictor, [query, support], found, precision=precision)
    back = frame_masks(logits, part_ids, size)[1][0]
    return float((back & truth).sum() / (back | truth).sum())
