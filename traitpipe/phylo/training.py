"""Phylo-NN training (base autoencoder, then the disentangler with the base frozen) and code generation.

The adversary is the authors' (elhamod/phylonn ``PhyloVQVAE.step`` with Lightning's optimizer
toggling): ``codebook_mapping_layers`` maps the non-phylo codes to the phylo grid and the shared
species head reads them. The disentangler's loss adds ``0.1 * (log C - H)``, H the entropy of the
species head on the mapped codes computed WITHOUT gradient to the codes: it trains only the species
head to be uncertain there, and sends no gradient to the encoder side. A second optimizer trains the
mapping alone (detached codes, species head frozen) to make that head confident: loss ``0.07 * H``.
Neither term uses species labels.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from traitpipe.models.batches import Batches, epoch_order
from traitpipe.models.device import autocast
from traitpipe.phylo.model import Disentangler

#: Weights of the loss terms (docs/methods.md, section 5; the authors' configs/phyloNN.yaml: adversary weight 0.1, beta 0.7).
CLASS_WEIGHT, ADVERSARY_WEIGHT, ADVERSARY_BETA = 0.1, 0.1, 0.7
BETAS = (0.5, 0.9)


def train_base(model: nn.Module, images: Dataset | torch.Tensor, *, epochs: int, batch_size: int, lr: float,
               seed: int, device: torch.device, progress: bool = True, precision: str = "float32",
               labels: torch.Tensor | None = None, max_per_class: int | None = None, workers: int = 0) -> list[float]:
    """Train the base VQGAN: L1 reconstruction + codebook loss, Adam betas (0.5, 0.9) (the authors add LPIPS).

    Parameters
    ----------
    images : torch.utils.data.Dataset or torch.Tensor
        Images in [-1, 1]: a dataset of float32 (3, S, S) items or a tensor (N, 3, S, S).
    precision : str
        "float32" (the authors') or "bfloat16" autocast (``traitpipe.models.device.autocast``).
    labels : torch.Tensor, int64, shape (N,), or None
        Species of every image: with ``max_per_class``, each epoch draws at most that many of a species
        (``traitpipe.models.batches.epoch_order``).
    workers : int
        DataLoader worker processes reading ``images``.

    Returns
    -------
    list of float
        Mean loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)
    history = []
    labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels
    batches = Batches(images, batch_size, workers, device)
    for _ in tqdm(range(epochs), desc="train Phylo-NN base", unit="epoch", disable=not progress, file=sys.stderr):
        total = 0.0
        order = epoch_order(labels, generator, max_per_class)
        for index, x in batches(order):
            x = x.to(device, non_blocking=True)
            with autocast(device, precision):
                reconstruction, vq_loss = model(x)
            loss = F.l1_loss(reconstruction.float(), x) + vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(order))
    return history


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of softmax(logits) over a batch, as the authors compute it (log of p + 1e-9)."""
    p = logits.softmax(1)
    return -(p * (p + 1e-9).log()).sum(1).mean()


def adversarial_uncertainty(model: Disentangler, nonphylo: torch.Tensor) -> torch.Tensor:
    """The disentangler's adversarial term ``log C - H``: H the species head's entropy on the mapped codes.

    The mapping runs without gradient (the authors' ``AdversarialLoss``), so this term's gradient
    reaches the species head only, never the codes or the encoder side.
    """
    head = model.classification_layers["class"]
    with torch.no_grad():
        mapped = model.codebook_mapping_layers(nonphylo)
    return math.log(head.seq[1].out_features) - _entropy(head(mapped).float())


def adversary_confidence(model: Disentangler, nonphylo: torch.Tensor) -> torch.Tensor:
    """The adversary's loss before its weights: H, the species head's entropy on the mapped, detached codes.

    Minimised over ``codebook_mapping_layers`` alone (the caller takes gradients for those only).
    """
    return _entropy(model.classification_layers["class"](model.codebook_mapping_layers(nonphylo.detach())).float())


def train_disentangler(base: nn.Module, model: Disentangler, images: Dataset | torch.Tensor, targets: torch.Tensor,
                       *, epochs: int, batch_size: int, lr: float, seed: int, device: torch.device,
                       progress: bool = True, precision: str = "float32", max_per_class: int | None = None,
                       workers: int = 0) -> list[float]:
    """Train the disentangler on the frozen base's features.

    Loss = L1(h, h') + VQ loss + ||W W^T - I||_F + 0.1 (0.5 sum_{k<L-1} CE_k + CE_species)
    + 0.1 (log C - H(species head on the mapped non-phylo codes, no gradient to the codes));
    then the adversary's step on ``codebook_mapping_layers`` alone: 0.07 H (module docstring).

    Parameters
    ----------
    base : torch.nn.Module
        The base autoencoder (``encode(images) -> h``), frozen.
    images : torch.utils.data.Dataset or torch.Tensor
        Images in [-1, 1]: a dataset of float32 (3, S, S) items or a tensor (N, 3, S, S).
    targets : torch.Tensor, int64, shape (N, L)
        Group of every image at every level (the last level is the species).
    precision : str
        "float32" (the authors') or "bfloat16" autocast.
    max_per_class : int or None
        Each epoch draws at most this many images of a species (``traitpipe.models.batches.epoch_order``).
    workers : int
        DataLoader worker processes reading ``images``.

    Returns
    -------
    list of float
        Mean disentangler loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    base.to(device).eval().requires_grad_(False)
    model.to(device).train()
    mapping = list(model.codebook_mapping_layers.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)
    adversary_optimizer = torch.optim.Adam(mapping, lr=lr, betas=BETAS)
    history = []
    batches = Batches(images, batch_size, workers, device)
    for _ in tqdm(range(epochs), desc="train Phylo-NN disentangler", unit="epoch", disable=not progress,
                  file=sys.stderr):
        total = 0.0
        order = epoch_order(targets[:, -1], generator, max_per_class)
        for index, x in batches(order):
            x, y = x.to(device, non_blocking=True), targets[index].to(device)
            with torch.no_grad(), autocast(device, precision):
                h = base.encode(x).float()
            with autocast(device, precision):
                out = model(h)
                uncertainty = adversarial_uncertainty(model, out.nonphylo)
            ce = [F.cross_entropy(logits.float(), y[:, k]) for k, logits in enumerate(out.level_logits)]
            loss = (F.l1_loss(out.reconstruction.float(), h) + out.vq_loss + model.orthogonality()
                    + CLASS_WEIGHT * (0.5 * sum(ce[:-1]) + ce[-1]) + ADVERSARY_WEIGHT * uncertainty)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with autocast(device, precision):  # the adversary: the mapping alone, codes detached, head frozen
                confidence = adversary_confidence(model, out.nonphylo)
            grads = torch.autograd.grad(ADVERSARY_BETA * ADVERSARY_WEIGHT * confidence, mapping)
            for parameter, grad in zip(mapping, grads):
                parameter.grad = grad
            adversary_optimizer.step()
            adversary_optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(index)
        history.append(total / len(order))
    model.eval()
    return history


@torch.no_grad()
def generate_codes(base: nn.Module, model: Disentangler, images: Dataset | torch.Tensor, *, batch_size: int,
                   device: torch.device, precision: str = "float32", workers: int = 0) -> dict[str, torch.Tensor]:
    """Codes of every image.

    Parameters
    ----------
    images : torch.utils.data.Dataset, torch.Tensor or callable
        Images in [-1, 1]: a dataset of float32 (3, S, S) items (read in ``workers`` DataLoader processes),
        a tensor (N, 3, S, S) on the CPU, or batches already set up: a callable yielding
        (index int64 (B,), images float32 (B, 3, S, S)) in image order (a shard job's
        :func:`traitpipe.jobs.images.read_once`).

    Returns
    -------
    dict
        ``phylo`` and ``nonphylo``: int64 (N, P); ``reconstruction_error``: float32 (N,),
        mean absolute difference between the features and their rebuild from the codes;
        ``level_logits``: list of float32 (N, groups_k).
    """
    base.to(device).eval()
    model.to(device).eval()
    keys = ("phylo", "nonphylo", "reconstruction_error")
    out: dict[str, list] = {k: [] for k in keys}
    logits: list[list[torch.Tensor]] = [[] for _ in range(model.levels)]
    batches = images if callable(images) else Batches(images, batch_size, workers, device)
    for _, x in batches():
        x = x.to(device, non_blocking=True)
        with autocast(device, precision):
            h = base.encode(x).float()
            result = model(h)
        out["phylo"].append(result.phylo_codes.cpu())
        out["nonphylo"].append(result.nonphylo_codes.cpu())
        out["reconstruction_error"].append((result.reconstruction.float() - h).abs().mean((1, 2, 3)).cpu())
        for k, level in enumerate(result.level_logits):
            logits[k].append(level.float().cpu())
    codes = {k: torch.cat(v) for k, v in out.items()}
    codes["level_logits"] = [torch.cat(level) for level in logits]
    return codes
