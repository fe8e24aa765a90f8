"""CLIP-like models (open_clip, BioCLIP) as classifiers over text prompts, for the CAM code.

The Finer-CAM paper extends the method to multi-modal models: the classes are text
prompts, a prompt's logit is the image's similarity to it, and comparing a concept with
its most similar concepts localises it. :func:`prompt_classifier` turns an open_clip
model and a list of prompts into such a classifier: ``forward(images)`` gives (B, P)
logits ``logit_scale * cos(image embedding, prompt embedding)``, the prompts embedded
once. It exposes the image tower's blocks and class token like a timm ViT, so
:func:`traitpipe.explain.cam.compute_cams` runs on it unchanged.

Models are loaded by :mod:`traitpipe.models.clip`. :func:`train_clip` trains a small one contrastively
(the demo).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from traitpipe.models.batches import Batches, epoch_length, epoch_order
from traitpipe.models.device import autocast
from traitpipe.models.transforms import augment


def preprocessing(model: nn.Module) -> dict:
    """``{"input_size", "mean", "std"}`` of an open_clip model's image tower (its own preprocessing).

    Images are resized whole to ``input_size`` (not centre-cropped as in open_clip's eval
    transform), so a map covers the whole specimen."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", model.visual.image_size)
    size = size if isinstance(size, int) else size[0]
    return {"input_size": int(size), "mean": [float(m) for m in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)],
            "std": [float(s) for s in cfg.get("std", open_clip.OPENAI_DATASET_STD)]}


def check_prompts(prompts: Sequence[str], tokenizer) -> list[str]:
    """The prompts as a list, or a ValueError naming the first bad entry.

    A prompt must be a non-empty string, unique, and fit the tokenizer's context (a longer
    one would be cut silently).

    Examples
    --------
    >>> check_prompts(["a red spot", "A red spot"], open_clip.SimpleTokenizer())
    Traceback (most recent call last):
    ...
    ValueError: prompt 1 ('A red spot') repeats prompt 0 ('a red spot') once tokenized: prompts must differ
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts: give at least one")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} ({prompt!r}) is not a non-empty string")
    tokens = tokenizer(prompts)
    seen: dict[tuple, int] = {}
    for i, (prompt, row) in enumerate(zip(prompts, tokens.tolist())):
        if tuple(row) in seen:  # the tokenizer lowercases and cleans: "A red spot" is "a red spot"
            raise ValueError(f"prompt {i} ({prompt!r}) repeats prompt {seen[tuple(row)]} "
                             f"({prompts[seen[tuple(row)]]!r}) once tokenized: prompts must differ")
        seen[tuple(row)] = i
        length = len(tokenizer.encode(prompt)) + 2 if hasattr(tokenizer, "encode") else None  # + start, end
        if (length > len(row)) if length is not None else row[-1] != 0:  # cut to fit (a full last position)
            raise ValueError(f"prompt {i} ({prompt!r}) is longer than the text tower's {len(row)} tokens")
    return prompts


@torch.no_grad()
def encode_prompts(model: nn.Module, tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Unit-norm text embeddings, float32 (P, D), on the model's device (prompts checked first)."""
    tokens = tokenizer(check_prompts(prompts, tokenizer)).to(next(model.parameters()).device)
    return F.normalize(model.encode_text(tokens).float(), dim=-1)


class PromptClassifier(nn.Module):
    """A CLIP image tower scored against fixed prompt embeddings: (B, 3, H, W) -> (B, P) logits.

    Parameters
    ----------
    visual : torch.nn.Module
        open_clip's ``VisionTransformer`` (class token first, batch-first blocks).
    text : torch.Tensor, float32, shape (P, D)
        Unit-norm prompt embeddings.
    logit_scale : float
        The model's learned temperature, already exponentiated (100 for OpenAI CLIP).

    Attributes
    ----------
    blocks : nn.ModuleList
        The image tower's residual blocks: the CAM code's default target layer is the last
        one's first norm (``visual.transformer.resblocks.<last>.ln_1``).
    num_prefix_tokens : int
        1: the class token, dropped when a block's tokens become a map.
    """

    num_prefix_tokens = 1

    def __init__(self, visual: nn.Module, text: torch.Tensor, logit_scale: float):
        super().__init__()
        transformer = getattr(visual, "transformer", None)
        if not hasattr(transformer, "resblocks"):
            raise TypeError(f"Finer-CAM on CLIP needs open_clip's VisionTransformer image tower, "
                            f"not {type(visual).__name__}")
        if not getattr(transformer, "batch_first", True):
            raise TypeError("the image tower runs its blocks sequence-first; build it with batch_first=True")
        self.visual = visual
        self.register_buffer("text", text.float())
        self.logit_scale = float(logit_scale)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.visual(images)
        with torch.autocast(images.device.type, enabled=False):  # similarities in float32 under bfloat16 autocast
            return self.logit_scale * F.normalize(features.float(), dim=-1) @ self.text.T


def prompt_classifier(model: nn.Module, tokenizer, prompts: Sequence[str]) -> PromptClassifier:
    """A CLIP "classifier" over text prompts (see :class:`PromptClassifier`), in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        An open_clip CLIP model (``encode_text``, ``visual``, ``logit_scale``).
    tokenizer : callable
    prompts : sequence of str
        One per class; each is checked (:func:`check_prompts`).

    Examples
    --------
    >>> from traitpipe.models.clip import TINY, build_clip, clip_tokenizer
    >>> clip = build_clip(TINY)
    >>> classifier = prompt_classifier(clip, clip_tokenizer(TINY), ["a photo of Mily alba.", "a red spot"])
    >>> classifier(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 2])
    """
    text = encode_prompts(model, tokenizer, prompts)
    return PromptClassifier(model.visual, text, model.logit_scale.exp().item()).eval()


def train_clip(model: nn.Module, tokenizer, images: Dataset | torch.Tensor, captions: Sequence[Sequence[str]],
               labels: torch.Tensor, *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
               device: torch.device, precision: str = "float32", progress: bool = True,
               max_per_class: int | None = None, workers: int = 0) -> list[dict]:
    """Train a CLIP in place, contrastively: each image against every caption, each caption against the batch.

    Every caption true of an image's species is a positive (an image has several: its taxonomic
    name, its scientific name, the trait it carries), so the loss is CLIP's symmetric
    cross-entropy with the positives' targets spread evenly: image -> all captions, and each
    caption -> the batch's images (the captions true of none of the batch are left out).

    Parameters
    ----------
    model : torch.nn.Module
        An open_clip CLIP.
    tokenizer : callable
    images : torch.utils.data.Dataset or torch.Tensor
        Normalised images: a dataset of float32 (3, H, W) items or a tensor (N, 3, H, W) (CPU).
    captions : sequence of sequence of str
        Per species (label), the captions true of its images.
    labels : torch.Tensor, int64, shape (N,)
        Species index per image.
    epochs, batch_size : int
    lr, weight_decay : float
        AdamW, warm-up of one epoch, then cosine decay.
    seed : int
        Shuffling and augmentation (flip and shift).
    device : torch.device
    precision : str
    max_per_class, workers : int or None, int
        See :func:`traitpipe.models.training.train_classifier`.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``loss``, ``train_accuracy`` (the top caption is true of the image).
    """
    texts = sorted({caption for group in captions for caption in group})
    index = {text: i for i, text in enumerate(texts)}
    truth = torch.zeros(len(captions), len(texts))
    for label, group in enumerate(captions):
        truth[label, [index[c] for c in group]] = 1.0
    tokens = tokenizer(check_prompts(texts, tokenizer)).to(device)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    # open_clip's recipe: no weight decay on gains, biases and the temperature
    groups = [{"params": [], "weight_decay": weight_decay}, {"params": [], "weight_decay": 0.0}]
    for name, p in model.named_parameters():
        groups[p.ndim < 2 or "logit_scale" in name]["params"].append(p)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    steps = math.ceil(epoch_length(labels, max_per_class) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / steps) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / max(1, epochs * steps)))))
    history = []
    batches = Batches(images, batch_size, workers, device)
    for epoch in tqdm(range(epochs), desc="train clip", unit="epoch", disable=not progress, file=sys.stderr):
        order = epoch_order(labels, generator, max_per_class)
        loss_sum = correct = 0.0
        for chosen, batch in batches(order):
            batch = augment(batch, generator).to(device, non_blocking=True)
            positive = truth[labels[chosen]].to(device)  # (B, T)
            with autocast(device, precision):
                image = F.normalize(model.encode_image(batch).float(), dim=-1)
                text = F.normalize(model.encode_text(tokens).float(), dim=-1)
            logits = model.logit_scale.exp() * image @ text.T
            used = positive.sum(0) > 0  # captions true of some image of the batch
            per_image = F.cross_entropy(logits, positive / positive.sum(1, keepdim=True))
            per_caption = F.cross_entropy(logits.T[used], (positive / positive.sum(0)).T[used])
            loss = 0.5 * (per_image + per_caption)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            loss_sum += loss.item() * len(chosen)
            correct += positive.gather(1, logits.argmax(1, keepdim=True)).sum().item()
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(order), "train_accuracy": correct / len(order)})
    model.eval()
    return history
