"""Train a SAM 2 on pseudo-videos, in SAM 2's own form: ``SAM2Train`` (the first frame's part masks as the
prompt, the later frames' masks as targets) and the authors' multi-step mask, IoU and object-score losses
(``training.loss_fns.MultiStepMultiMasksAndIous``, with the weights of their released training configs).

A pseudo-video is SST's: a species' labelled specimen first, then other specimens of the same species.
Any collection with true part masks can train one (a ``parts_truth`` column).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from traitpipe.segment.sst import build_sam2, preprocess, propagate
from traitpipe.traits.overlap import part_overlap

#: The loss of SAM 2.1's training configs (sam2.1_hiera_b+_MOSE_finetune.yaml: ``loss.all``).
LOSS = {"weight_dict": {"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1},
        "supervise_all_iou": True, "iou_use_l1_loss": True, "pred_obj_scores": True,
        "focal_gamma_obj_score": 0.0, "focal_alpha_obj_score": -1.0}
#: SAM2Train's settings: a mask prompt on the first frame only (no clicks, no boxes), as SST prompts.
TRAIN_MODEL = {"prob_to_use_pt_input_for_train": 0.0, "prob_to_use_pt_input_for_eval": 0.0,
               "prob_to_use_box_input_for_train": 0.0, "prob_to_use_box_input_for_eval": 0.0,
               "num_frames_to_correct_for_train": 1, "num_frames_to_correct_for_eval": 1,
               "num_init_cond_frames_for_train": 1, "rand_init_cond_frames_for_train": False,
               "num_init_cond_frames_for_eval": 1}


def video_datapoint(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray], parts: Sequence[int],
                    image_size: int):
    """One pseudo-video as SAM 2's training code takes it (a batch of one video).

    Parameters
    ----------
    frames : sequence of numpy.ndarray, uint8, each (H_t, W_t, 3)
        The frames, the labelled one first.
    labels : sequence of numpy.ndarray, integer, each (H_t, W_t)
        Their part labels.
    parts : sequence of int, length O
        The part labels to track, one object each.
    image_size : int

    Returns
    -------
    training.utils.data_utils.BatchedVideoDatapoint
        ``img_batch`` (T, 1, 3, S, S) normalised as SAM 2's loader does, ``masks`` (T, O, S, S) bool.
    """
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    images = torch.stack([preprocess(frame, image_size) for frame in frames])[:, None]
    masks = torch.stack([torch.from_numpy(np.stack([
        np.array(Image.fromarray((label == p).astype(np.uint8)).resize((image_size, image_size), Image.NEAREST))
        for p in parts]).astype(bool)) for label in labels])
    n_frames, n_objects = masks.shape[:2]
    frame_of = torch.arange(n_frames, dtype=torch.int32)[:, None].expand(n_frames, n_objects)
    obj_to_frame = torch.stack([frame_of, torch.zeros_like(frame_of)], dim=-1)  # (frame, video 0)
    ids = torch.stack([torch.zeros_like(frame_of), torch.arange(n_objects)[None].expand(n_frames, n_objects),
                       frame_of], dim=-1).long()
    sizes = torch.tensor([[label.shape[0], label.shape[1]] for label in labels])[:, None].expand(
        n_frames, n_objects, 2)
    return BatchedVideoDatapoint(img_batch=images, obj_to_frame_idx=obj_to_frame, masks=masks,
                                 metadata=BatchedVideoMetaData(unique_objects_identifier=ids,
                                                               frame_orig_size=sizes),
                                 dict_key="pseudo_video", batch_size=[n_frames])


def build_trainable(config: str | Path, image_size: int, seed: int = 0) -> torch.nn.Module:
    """SAM 2 in its training form (``SAM2Train``), random weights from ``seed``, in train mode."""
    torch.manual_seed(seed)
    model = build_sam2(config, image_size, target="training.model.sam2.SAM2Train", extra=TRAIN_MODEL)
    return model.train()


def sam2_loss():
    """The authors' loss module (:data:`LOSS`)."""
    from training.loss_fns import MultiStepMultiMasksAndIous

    return MultiStepMultiMasksAndIous(**{**LOSS, "weight_dict": dict(LOSS["weight_dict"])})


def train_step(model: torch.nn.Module, loss_fn, optimizer: torch.optim.Optimizer, batch, device) -> float:
    """One optimisation step on one pseudo-video; returns the authors' core loss (float)."""
    from training.trainer import CORE_LOSS_KEY

    batch = batch.to(device)
    outputs = model(batch)
    loss = loss_fn(outputs, batch.masks)[CORE_LOSS_KEY]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # the authors' gradient clipping (max norm 0.1)
    optimizer.step()
    return float(loss.detach())


def pseudo_video(indices: Sequence[int], reference: int, length: int, rng: np.random.Generator) -> list[int]:
    """A species' pseudo-video for training: its reference first, then ``length - 1`` other specimens drawn
    at random (fewer when the species has fewer).

    Examples
    --------
    >>> pseudo_video([4, 5, 6, 7], 5, 3, np.random.default_rng(0))[0]
    5
    """
    others = [i for i in indices if i != reference]
    chosen = rng.choice(len(others), size=min(length - 1, len(others)), replace=False) if others else []
    return [reference] + [others[k] for k in chosen]


def validation_miou(predictor, videos: Sequence[tuple[list, list]], parts: Sequence[int]) -> float:
    """SST's mIoU over the query frames of pseudo-videos (frame 0's true labels as the prompt): per part,
    intersections over unions summed over frames, then the mean over the parts present.

    Parameters
    ----------
    predictor : SAM2VideoPredictor
    videos : sequence of (frames, labels)
        Each a list of (H, W, 3) uint8 frames and their (H, W) true labels, the prompt frame first.
    parts : sequence of int
    """
    inter, union = np.zeros(len(parts)), np.zeros(len(parts))
    for frames, labels in videos:
        maps = propagate(predictor, frames, labels[0].astype(np.uint8), precision="float32")
        for predicted, truth in zip(maps[1:], labels[1:]):
            i, u = part_overlap(predicted, truth, parts)
            inter, union = inter + i, union + u
    present = union > 0
    return float(np.mean(inter[present] / union[present])) if present.any() else float("nan")


def as_predictor(model: torch.nn.Module, config: str | Path, image_size: int, device) -> torch.nn.Module:
    """The video predictor with a training model's current weights (no file written)."""
    predictor = build_sam2(config, image_size, "sam2.sam2_video_predictor.SAM2VideoPredictor")
    predictor.load_state_dict(model.state_dict())
    return predictor.to(device).eval()


def train_sam2(config: str | Path, image_size: int, videos: dict, held_out: Sequence[str], parts: Sequence[int], *,
               epochs: int, frames: int, lr: float, weight_decay: float, validate_every: int, seed: int,
               device="cpu", progress: bool = True) -> tuple[torch.nn.Module, list[dict]]:
    """Train a SAM 2 from random weights on pseudo-videos of the species not held out.

    Parameters
    ----------
    config : str or Path
        A SAM 2 model config file (see :func:`traitpipe.segment.sst.config_file`).
    image_size : int
    videos : dict
        species -> (frames, labels): each species' specimens (uint8 (H, W, 3)) and true part labels (H, W).
    held_out : sequence of str
        Species validated on, never trained on.
    parts : sequence of int
        Part labels, one tracked object each.
    epochs : int
        An epoch is one pseudo-video per training species: a random specimen as the prompt frame, then
        ``frames - 1`` other specimens.
    lr, weight_decay : float
        AdamW with gradient clipping at 0.1 and cosine decay to lr / 10, as the authors' configs; one
        parameter group (their configs also spare biases and LayerNorms from weight decay and give the
        image encoder a lower rate).
    validate_every : int
        Epochs between validations (and the last): SST's mIoU on the held-out species.
    seed : int
    device : str or torch.device
    progress : bool

    Returns
    -------
    model : torch.nn.Module
        ``SAM2Train`` with the trained weights.
    history : list of dict
        Per epoch: ``epoch``, ``loss`` (mean core loss), and ``val_miou`` where validated.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    training = [name for name in sorted(videos) if name not in held_out and len(videos[name][0]) > 1]
    if not training:
        raise ValueError("no species to train SAM 2 on: each needs two specimens with true part masks")
    validation = [videos[name] for name in held_out]
    model = build_trainable(config, image_size, seed).to(device)
    loss_fn = sam2_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(training), eta_min=lr / 10)
    history = []
    for epoch in tqdm(range(1, epochs + 1), desc="train SAM 2", unit="epoch", disable=not progress):
        losses = []
        for name in rng.permutation(training):
            images, labels = videos[name]
            order = pseudo_video(range(len(images)), int(rng.integers(len(images))), frames, rng)
            batch = video_datapoint([images[i] for i in order], [labels[i] for i in order], parts, image_size)
            losses.append(train_step(model, loss_fn, optimizer, batch, device))
            schedule.step()
        record = {"epoch": epoch, "loss": float(np.mean(losses))}
        if validation and (epoch % validate_every == 0 or epoch == epochs):
            record["val_miou"] = validation_miou(as_predictor(model, config, image_size, device), validation, parts)
            model.train()
            tqdm.write(f"epoch {epoch}: loss {record['loss']:.3f}, held-out mIoU {record['val_miou']:.3f}",
                       file=sys.stderr)
        history.append(record)
    return model, history
