"""Train a SAM 2 on pseudo-videos, in SAM 2's own form: ``SAM2Train`` (the first frame's part masks as the
prompt, the later frames' masks as targets) and the authors' multi-step mask, IoU and object-score losses
(``training.loss_fns.MultiStepMultiMasksAndIous``, with the weights of their released training configs).

A pseudo-video is SST's: a species' labelled specimen first, then other specimens of the same species.
Any collection with true part masks can train one (a ``parts_truth`` column).

Two departures from a released SAM 2's recipe, both because it trains from nothing here: the image encoder,
which SAM 2 takes pretrained (MAE Hiera), is first pretrained on the collection's own part labels
(:func:`pretrain_encoder`) and then kept frozen; and every pseudo-video gets a random colour look
(:func:`augment_video`), so that a model seeing a few species learns to track parts, not colours.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from traitpipe.segment.sst import build_sam2, preprocess, propagate
from traitpipe.traits.overlap import part_masks, part_overlap

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

#: Below this mIoU a SAM 2 in training is on the plateau where masks are empty or wrong.
STUCK_MIOU = 0.1
#: Training species whose first pseudo-video checks a run for that plateau.
FIT_SPECIES = 4


def augment_video(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray], rng: np.random.Generator,
                  flip: bool = True):
    """One random look for a whole pseudo-video, the same for all its frames (as SAM 2's ``consistent_transform``
    video augmentations): its colour channels permuted and scaled, and a horizontal flip half the time.

    A species is its colours to a model trained on a few species; new colours on every video make it track
    the prompt's parts by their shape and place instead, so it carries over to species it never saw.

    Parameters
    ----------
    frames : sequence of numpy.ndarray, uint8, each (H_t, W_t, 3)
    labels : sequence of numpy.ndarray, integer, each (H_t, W_t)
    rng : numpy.random.Generator
    flip : bool
        Whether to flip (never when labels name sides, as left and right wings).

    Returns
    -------
    frames, labels : lists
        Same shapes and dtypes.

    Examples
    --------
    >>> frame, label = np.zeros((2, 3, 3), np.uint8), np.arange(6).reshape(2, 3)
    >>> _, [flipped] = augment_video([frame], [label], np.random.default_rng(1))
    >>> flipped.tolist()
    [[2, 1, 0], [5, 4, 3]]
    """
    order, gain = rng.permutation(3), rng.uniform(0.7, 1.3, size=3)
    flip = flip and rng.random() < 0.5
    looks = [np.clip(frame[..., order] * gain, 0, 255).astype(np.uint8) for frame in frames]
    if flip:
        looks, labels = [f[:, ::-1].copy() for f in looks], [lab[:, ::-1].copy() for lab in labels]
    return looks, list(labels)


def video_datapoint(videos: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]], parts: Sequence[int],
                    image_size: int):
    """Pseudo-videos of equal length as SAM 2's training code takes them (a batch of B videos).

    Parameters
    ----------
    videos : sequence of (frames, labels), length B
        Each video's frames (uint8 (H_t, W_t, 3)), the labelled one first, and their part labels
        (integer (H_t, W_t)); every video has T frames.
    parts : sequence of int, length O
        The part labels to track, one object each per video.
    image_size : int

    Returns
    -------
    training.utils.data_utils.BatchedVideoDatapoint
        ``img_batch`` (T, B, 3, S, S) normalised as SAM 2's loader does, ``masks`` (T, B * O, S, S) bool,
        video b's objects at b * O .. (b + 1) * O - 1.
    """
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    n_frames, n_videos, n_parts = len(videos[0][0]), len(videos), len(parts)
    if any(len(frames) != n_frames for frames, _ in videos):
        raise ValueError("the videos of one batch need the same number of frames")
    images = torch.stack([torch.stack([preprocess(frames[t], image_size) for frames, _ in videos])
                          for t in range(n_frames)])
    values = torch.tensor(list(parts))[:, None, None]
    masks = torch.stack([torch.cat([resize_labels(labels[t], image_size)[None] == values for _, labels in videos])
                         for t in range(n_frames)])
    frame_of = torch.arange(n_frames, dtype=torch.int32)[:, None].expand(n_frames, n_videos * n_parts)
    video_of = torch.arange(n_videos, dtype=torch.int32).repeat_interleave(n_parts)[None].expand_as(frame_of)
    object_of = torch.arange(n_parts).repeat(n_videos)[None].expand_as(frame_of)
    ids = torch.stack([video_of, object_of, frame_of], dim=-1).long()
    sizes = torch.tensor([[[labels[t].shape[0], labels[t].shape[1]] for _, labels in videos
                           for _ in parts] for t in range(n_frames)])
    return BatchedVideoDatapoint(img_batch=images, obj_to_frame_idx=torch.stack([frame_of, video_of], dim=-1),
                                 masks=masks, metadata=BatchedVideoMetaData(unique_objects_identifier=ids,
                                                                            frame_orig_size=sizes),
                                 dict_key="pseudo_video", batch_size=[n_frames])


def resize_labels(label: np.ndarray, size: int) -> torch.Tensor:
    """A label image (H, W), integer, at (size, size) by nearest neighbour: int64 tensor."""
    resized = Image.fromarray(label.astype(np.int32)).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.array(resized)).long()


def label_batch(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray], image_size: int):
    """Frames and their part labels at the model's size: ((N, 3, S, S) float32 as SAM 2's loader,
    (N, S, S) int64)."""
    images = torch.stack([preprocess(frame, image_size) for frame in frames])
    return images, torch.stack([resize_labels(label, image_size) for label in labels])


class PartHead(torch.nn.Module):
    """Dense part labels from SAM 2's image encoder: a 1x1 convolution on its neck's levels, upsampled to the
    finest and concatenated; logits at the input size. Used only to pretrain the encoder."""

    def __init__(self, encoder: torch.nn.Module, n_labels: int):
        super().__init__()
        self.encoder = encoder
        levels = len(encoder.neck.backbone_channel_list) - encoder.scalp
        self.head = torch.nn.Conv2d(encoder.neck.d_model * levels, n_labels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 -> (B, n_labels, S, S) logits."""
        levels = self.encoder(images)["backbone_fpn"]
        size = levels[0].shape[-2:]
        features = torch.cat([torch.nn.functional.interpolate(f, size=size, mode="bilinear") for f in levels], 1)
        return torch.nn.functional.interpolate(self.head(features), size=images.shape[-2:], mode="bilinear")


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float, encoder_lr: float | None = None) -> list[dict]:
    """AdamW groups as the authors' configs: weight decay on weights, none on biases and norms; the image
    encoder at its own rate ``encoder_lr`` (theirs: ``vision_lr``; None: ``lr``; 0: frozen, no gradients)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        encoder = name.startswith("image_encoder.") and encoder_lr is not None
        if encoder and encoder_lr == 0:
            param.requires_grad_(False)
        if param.requires_grad:
            groups.setdefault((encoder, param.ndim <= 1 or name.endswith(".bias")), []).append(param)
    return [{"params": params, "lr": encoder_lr if encoder else lr, "weight_decay": 0.0 if plain else weight_decay}
            for (encoder, plain), params in groups.items()]


def pretrain_encoder(encoder: torch.nn.Module, videos: dict, species: Sequence[str], n_labels: int,
                     image_size: int, *, steps: int, lr: float, weight_decay: float, rng: np.random.Generator,
                     device="cpu", batch: int = 16, progress: bool = True) -> list[float]:
    """Pretrain SAM 2's image encoder in place on dense part labelling of the training species.

    SAM 2's image encoder starts from a pretrained Hiera (the authors': MAE on ImageNet). With no pretrained
    encoder to load here, it learns the collection's parts first: cross-entropy of :class:`PartHead`'s
    labels against the true part masks, specimens in random colour looks (:func:`augment_video`, no flips:
    labels name sides). The head is dropped afterwards. Without this, video training from random weights
    stays at all-background masks for thousands of steps (bench/sst_train.py).

    Parameters
    ----------
    encoder : torch.nn.Module
        The model's ``image_encoder``.
    videos : dict
        species -> (frames, labels), as :func:`train_sam2`.
    species : sequence of str
        The species to learn from.
    n_labels : int
        1 + the largest part label.
    image_size : int
    steps, lr, weight_decay : int, float, float
        AdamW, constant rate.
    rng : numpy.random.Generator
    device : str or torch.device
    batch : int
        Specimens per step.
    progress : bool

    Returns
    -------
    list of float
        The loss of every step.
    """
    from tqdm import tqdm

    model = PartHead(encoder, n_labels).to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay, lr), lr=lr)
    pool = [(name, i) for name in species for i in range(len(videos[name][0]))]
    losses = []
    for _ in tqdm(range(steps), desc="pretrain SAM 2's encoder", unit="step", disable=not progress):
        chosen = [pool[k] for k in rng.choice(len(pool), size=min(batch, len(pool)), replace=False)]
        frames, labels = augment_video([videos[n][0][i] for n, i in chosen], [videos[n][1][i] for n, i in chosen],
                                       rng, flip=False)
        images, targets = label_batch(frames, labels, image_size)
        loss = torch.nn.functional.cross_entropy(model(images.to(device)), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


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


def video_overlaps(predictor, frames: Sequence[np.ndarray], prompt: np.ndarray, truths: Sequence[np.ndarray],
                   parts: Sequence[int], precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """SST on one pseudo-video against the truth: per query frame and part, intersection and union in pixels of
    the part's own mask (masks may overlap) and its true pixels.

    Parameters
    ----------
    predictor : SAM2VideoPredictor
    frames : sequence of numpy.ndarray, uint8, each (H_t, W_t, 3)
        The prompt frame first, then the queries.
    prompt : numpy.ndarray, integer, (H_0, W_0)
        The prompt frame's part labels (SST's reference mask).
    truths : sequence of numpy.ndarray, integer, each (H_t, W_t)
        The queries' true labels (frames 1..T-1).
    parts : sequence of int, length P
    precision : str

    Returns
    -------
    intersection, union : numpy.ndarray, int64, shape (T - 1, P)
    """
    segmented = propagate(predictor, frames, prompt.astype(np.uint8), precision=precision)
    pairs = [part_overlap(part_masks(masks, segmented.parts, parts), truth, parts)
             for masks, truth in zip(segmented.masks[1:], truths)]
    return tuple(np.array([pair[k] for pair in pairs], np.int64).reshape(-1, len(parts)) for k in (0, 1))


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
        i, u = video_overlaps(predictor, frames, labels[0], labels[1:], parts)
        inter, union = inter + i.sum(0), union + u.sum(0)
    present = union > 0
    return float(np.mean(inter[present] / union[present])) if present.any() else float("nan")


def as_predictor(model: torch.nn.Module, config: str | Path, image_size: int, device) -> torch.nn.Module:
    """The video predictor with a training model's current weights (no file written)."""
    predictor = build_sam2(config, image_size, "sam2.sam2_video_predictor.SAM2VideoPredictor")
    predictor.load_state_dict(model.state_dict())
    return predictor.to(device).eval()


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """The rate's factor at ``step``: linear warm-up over ``warmup`` steps, then cosine decay to 1/10.

    Examples
    --------
    >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 10)]
    [0.5, 1.0, 1.0, 0.1]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return float(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))


def train_sam2(config: str | Path, image_size: int, videos: dict, held_out: Sequence[str], parts: Sequence[int], *,
               epochs: int, frames: int, lr: float, weight_decay: float, validate_every: int, seed: int,
               batch: int = 6, warmup: float = 0.05, augment: bool = True, pretrain_steps: int = 0,
               encoder_lr: float | None = None, restarts: int = 0, restart_at: int = 150,
               restart_below: float = STUCK_MIOU, device="cpu",
               progress: bool = True) -> tuple[torch.nn.Module, list[dict], list[float]]:
    """Train a SAM 2 from random weights on pseudo-videos of the species not held out.

    From random weights, video training can stay on a plateau where every mask is empty (bench/sst_train.py:
    one seed of three). A run still there at epoch ``restart_at`` (SST's mIoU on pseudo-videos of training
    species below ``restart_below``; the held-out species are not looked at) starts again from the same
    pretrained encoder with fresh weights elsewhere (seed ``seed + attempt``), at most ``restarts`` times.

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
        ``frames - 1`` other specimens (species with fewer specimens are left out of training).
    lr, weight_decay : float
        AdamW (no decay on biases and norms) with gradient clipping at 0.1 and cosine decay to lr / 10, as the
        authors' configs; the image encoder at ``encoder_lr``.
    validate_every : int
        Epochs between validations (and the last): SST's mIoU on the held-out species.
    seed : int
    batch : int
        Pseudo-videos per optimisation step.
    warmup : float
        Share of the steps with a linearly rising rate (training starts from random weights).
    augment : bool
        A random colour look and flip per video (:func:`augment_video`).
    pretrain_steps : int
        Steps of :func:`pretrain_encoder` before video training.
    encoder_lr : float or None
        The image encoder's rate in video training (None: ``lr``; 0: frozen).
    restarts : int
        Further attempts allowed for a run stuck at ``restart_at``.
    restart_at : int
        The epoch of the check. It draws no random number (off a validation epoch its predictor is built
        under a forked RNG), so an attempt that is not stuck trains exactly as with ``restarts=0``.
    restart_below : float
        The training species' mIoU under which a run is stuck.
    device : str or torch.device
    progress : bool

    Returns
    -------
    model : torch.nn.Module
        ``SAM2Train`` with the trained weights.
    history : list of dict
        Per epoch of every attempt: ``attempt`` (0 first), ``epoch``, ``loss`` (mean core loss), ``seconds``
        since the start (pretraining included), ``val_miou`` where validated and ``fit_miou`` (training
        species) where checked for the plateau. The returned model is the last attempt's.
    pretrain_losses : list of float
        The encoder's pretraining loss per step (empty without pretraining).
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    training = [name for name in sorted(videos) if name not in held_out and len(videos[name][0]) >= frames]
    if not training:
        raise ValueError(f"no species to train SAM 2 on: each needs {frames} specimens with true part masks "
                         "(segment.train.frames)")
    validation = [videos[name] for name in held_out]
    fit = [(videos[name][0][:frames], videos[name][1][:frames]) for name in training[:FIT_SPECIES]]
    start = time.perf_counter()
    model = build_trainable(config, image_size, seed).to(device)
    pretrain_losses = []
    if pretrain_steps:
        pretrain_losses = pretrain_encoder(model.image_encoder, videos, training, max(parts) + 1, image_size,
                                           steps=pretrain_steps, lr=lr, weight_decay=weight_decay, rng=rng,
                                           device=device, progress=progress)
    encoder = {key: value.clone() for key, value in model.image_encoder.state_dict().items()}
    loss_fn = sam2_loss()
    per_epoch = -(-len(training) // batch)
    history = []
    for attempt in range(restarts + 1):
        if attempt:
            model = build_trainable(config, image_size, seed + attempt).to(device)
            model.image_encoder.load_state_dict(encoder)
            rng = np.random.default_rng([seed, attempt])
        optimizer = torch.optim.AdamW(param_groups(model, weight_decay, lr, encoder_lr), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, epochs * per_epoch, int(warmup * epochs * per_epoch)))
        stuck = False
        for epoch in tqdm(range(1, epochs + 1), desc=f"train SAM 2 (attempt {attempt + 1})" if attempt else
                          "train SAM 2", unit="epoch", disable=not progress):
            losses, names = [], list(rng.permutation(training))
            for first in range(0, len(names), batch):
                clips = []
                for name in names[first:first + batch]:
                    images, labels = videos[name]
                    order = pseudo_video(range(len(images)), int(rng.integers(len(images))), frames, rng)
                    clip = [images[i] for i in order], [labels[i] for i in order]
                    clips.append(augment_video(*clip, rng) if augment else clip)
                losses.append(train_step(model, loss_fn, optimizer, video_datapoint(clips, parts, image_size),
                                         device))
                schedule.step()
            record = {"attempt": attempt, "epoch": epoch, "loss": float(np.mean(losses)),
                      "seconds": time.perf_counter() - start}
            validate = bool(validation) and (epoch % validate_every == 0 or epoch == epochs)
            check = epoch == restart_at and attempt < restarts
            if validate or check:
                with torch.random.fork_rng(devices=[], enabled=not validate):  # a check alone draws nothing
                    predictor = as_predictor(model, config, image_size, device)
                if validate:
                    record["val_miou"] = validation_miou(predictor, validation, parts)
                if check:
                    record["fit_miou"] = validation_miou(predictor, fit, parts)
                    stuck = record["fit_miou"] < restart_below
                model.train()
                tqdm.write(f"epoch {epoch}: loss {record['loss']:.3f}"
                           + "".join(f", {label} mIoU {record[key]:.3f}" for key, label in
                                     (("val_miou", "held-out"), ("fit_miou", "training species")) if key in record),
                           file=sys.stderr)
            history.append(record)
            if stuck:
                tqdm.write(f"stuck where masks are empty (training species' mIoU {record['fit_miou']:.3f} < "
                           f"{restart_below}): starting again with seed {seed + attempt + 1}", file=sys.stderr)
                break
        if not stuck:
            break
    return model, history, pretrain_losses
