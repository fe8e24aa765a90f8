"""Training loops on streamed batches: a classifier (fine-tune or linear probe)."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from traitpipe.models.batches import Batches, epoch_length, epoch_order
from traitpipe.models.device import autocast
from traitpipe.models.transforms import augment


def split_by_specimen(specimens: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Hold out whole specimens for validation, per class, reproducibly.

    Parameters
    ----------
    specimens : numpy.ndarray of str, shape (N,)
        Specimen id per image (images of one specimen stay on one side).
    labels : numpy.ndarray of int, shape (N,)
    val_fraction : float
        Fraction of each class's specimens held out (at least one when the class
        has two or more specimens, none when it has one).
    seed : int

    Returns
    -------
    numpy.ndarray of bool, shape (N,)
        True for validation images.
    """
    rng = np.random.default_rng(seed)
    held = set()
    for label in np.unique(labels):
        names = np.unique(specimens[labels == label])
        if len(names) < 2 or val_fraction <= 0:
            continue
        count = min(len(names) - 1, max(1, int(round(val_fraction * len(names)))))
        held.update(rng.choice(names, size=count, replace=False).tolist())
    return np.isin(specimens, list(held))


@torch.no_grad()
def predict(model: nn.Module, images: Dataset | torch.Tensor | Batches, batch_size: int, device: torch.device,
            precision: str = "float32", workers: int = 0) -> torch.Tensor:
    """Logits (N, K) float32 on the CPU, in eval mode, in ``precision``.

    ``images``: a dataset of (3, H, W) inputs or a tensor (N, 3, H, W), streamed in ``batch_size`` batches
    by ``workers`` DataLoader processes; or :class:`~traitpipe.models.batches.Batches` already set up."""
    model.eval()
    out = []
    batches = images if isinstance(images, Batches) else Batches(images, batch_size, workers, device)
    for _, batch in batches():
        with autocast(device, precision):
            out.append(model(batch.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def train_classifier(model: nn.Module, images: Dataset | torch.Tensor, labels: torch.Tensor, *, epochs: int,
                     batch_size: int, lr: float, weight_decay: float, linear_probe: bool, seed: int,
                     device: torch.device, warmup_epochs: int = 2, label_smoothing: float = 0.1,
                     optimizer: str = "adamw", trainable: list[nn.Parameter] | list[dict] | None = None,
                     lr_drop: int | None = None, clip_norm: float | None = None, crop_scale: float | None = None,
                     val: tuple[Dataset | torch.Tensor, torch.Tensor] | None = None, progress: bool = True,
                     desc: str = "train classifier", precision: str = "float32", max_per_class: int | None = None,
                     workers: int = 0, lr_min: float | None = None, warmup_lr_init: float = 0.0,
                     drop_last: bool = False, clip_every_parameter: bool = False) -> list[dict]:
    """Train a classifier in place with warm-up and cosine (or step) decay, flip/shift augmentation.

    Parameters
    ----------
    model : torch.nn.Module
        A timm classifier (``get_classifier()`` names its head).
    images : torch.utils.data.Dataset or torch.Tensor
        Normalised training images: a dataset whose item is float32 (3, H, W) (read in ``workers``
        DataLoader processes), or a tensor (N, 3, H, W) on the CPU.
    labels : torch.Tensor, int64, shape (N,)
    epochs, batch_size : int
    lr, weight_decay : float
    linear_probe : bool
        Train only the head; the backbone stays frozen.
    warmup_epochs : int
        Linear warm-up before the cosine decay.
    label_smoothing : float
    optimizer : str
        "adamw", or "sgd" (momentum 0.9, as Prompt-CAM's reference recipe).
    trainable : list of nn.Parameter, list of dict, or None
        The parameters to train (e.g. Prompt-CAM's prompts and head), or optimizer
        parameter groups (``{"params": [...], "lr": ...}``; a group without "lr"
        takes ``lr``); None: all of them, or the head alone for a linear probe.
        Every other parameter is frozen while training and its flag restored
        afterwards.
    lr_drop : int or None
        None: cosine decay after the warm-up. An int: step decay, the rates x0.1
        every ``lr_drop`` epochs (DETR's and INTR's StepLR).
    lr_min, warmup_lr_init : float or None, float
        With ``lr_min``: the Prompt-CAM authors' schedule (``engine/trainer.py``), timm's
        ``CosineLRScheduler(t_initial=epochs, warmup_t=warmup_epochs, lr_min, warmup_lr_init)`` stepped once
        per epoch, at each epoch's end with that epoch's index, so epochs 0 and 1 both train at
        ``warmup_lr_init`` (its warm-up is linear from there; the cosine runs from epoch 0, not from the warm-up's
        end, down to ``lr_min``). None: the per-step schedules above.
    clip_norm : float or None
        Clip the gradients' total norm (DETR's and INTR's 0.1).
    clip_every_parameter : bool
        The norm is over every parameter of the model, frozen ones included (which then get gradients, but are
        never stepped), as INTR's ``--finetune`` (it sets ``requires_grad`` on all after building the optimizer).
        Unlike theirs, those gradients are cleared every step rather than summed over the run.
    drop_last : bool
        Leave out each epoch's last partial batch (INTR's ``drop_last=True``).
    crop_scale : float or None
        Augmentation: None = flip and shift; a float = flip, resize by it, random crop
        (see ``traitpipe.models.transforms.augment``).
    seed : int
        Fixes initial shuffling and augmentation.
    device : torch.device
    val : (images, labels) or None
        Scored after every epoch.
    precision : str
        "float32" (default) or "bfloat16" autocast for the forward passes
        (``traitpipe.models.device.autocast``).
    max_per_class : int or None
        Each epoch draws at most this many images of a class (``traitpipe.models.batches.epoch_order``).
    workers : int
        DataLoader worker processes reading ``images`` (and ``val``'s).

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``loss``, ``train_accuracy``, ``val_accuracy`` (None without ``val``), ``lr``
        (the first parameter group's rate at the epoch's first step).
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    if trainable is None:
        trainable = list(model.get_classifier().parameters()) if linear_probe else list(model.parameters())
    groups = trainable if trainable and isinstance(trainable[0], dict) else [{"params": list(trainable)}]
    chosen = {id(p) for group in groups for p in group["params"]}
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen or clip_every_parameter)
    if optimizer == "sgd":
        step_rule = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        step_rule = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    length = epoch_length(labels, max_per_class)
    if drop_last and length < batch_size:
        raise ValueError(f"{desc}: an epoch has {length} images, fewer than one batch of {batch_size}, and the last "
                         "partial batch is dropped (as the authors do): lower the batch size")
    steps_per_epoch = length // batch_size if drop_last else math.ceil(length / batch_size)
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if lr_drop is not None:
            return 0.1 ** (step // steps_per_epoch // lr_drop)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    if lr_min is None:
        scheduler, per_epoch = torch.optim.lr_scheduler.LambdaLR(step_rule, schedule), None
    else:
        from timm.scheduler import CosineLRScheduler

        scheduler = None
        per_epoch = CosineLRScheduler(step_rule, t_initial=epochs, warmup_t=warmup_epochs, lr_min=lr_min,
                                      warmup_lr_init=warmup_lr_init)
    clipped = list(model.parameters()) if clip_every_parameter else [p for group in groups for p in group["params"]]
    history = []
    batches = Batches(images, batch_size, workers, device)
    val_batches = Batches(val[0], batch_size, workers, device) if val is not None and len(val[0]) else None
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, file=sys.stderr)
    for epoch in bar:
        model.train()
        order = epoch_order(labels, generator, max_per_class)
        if drop_last:
            order = order[:steps_per_epoch * batch_size]
        loss_sum, correct, rate = 0.0, 0, step_rule.param_groups[0]["lr"]
        for index, batch in batches(order):
            batch = augment(batch, generator, crop_scale=crop_scale).to(device, non_blocking=True)
            target = labels[index].to(device)
            with autocast(device, precision):
                logits = model(batch)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
            model.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(clipped, clip_norm)
            step_rule.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == target).sum().item()
        val_accuracy = None
        if val_batches is not None:
            predicted = predict(model, val_batches, batch_size, device, precision).argmax(1)
            val_accuracy = (predicted == val[1]).float().mean().item()
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(order), "train_accuracy": correct / len(order),
                        "val_accuracy": val_accuracy, "lr": rate})
        if per_epoch is not None:
            per_epoch.step(epoch)  # as engine/trainer.py at an epoch's end: the next epoch trains at rate(epoch)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=val_accuracy)
    for p in model.parameters():
        p.requires_grad_(flags[id(p)])
    return history
