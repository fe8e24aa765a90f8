"""Phylo-NN training (base autoencoder, then the disentangler with the base frozen) and code generation."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from traitpipe.models.device import autocast
from traitpipe.phylo.model import Disentangler, VQAutoencoder

#: Weights of the loss terms (METHODS.md section 5).
CLASS_WEIGHT, ADVERSARY_WEIGHT = 0.1, 0.1
BETAS = (0.5, 0.9)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_base(model: VQAutoencoder, images: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int,
               device: torch.device, progress: bool = True, precision: str = "float32") -> list[float]:
    """Train the VQ autoencoder: L1 reconstruction + VQ loss, Adam betas (0.5, 0.9).

    Parameters
    ----------
    images : torch.Tensor, float32, shape (N, 3, S, S), in [-1, 1]
    precision : str
        "float32" (the authors') or "bfloat16" autocast (``traitpipe.models.device.autocast``).

    Returns
    -------
    list of float
        Mean loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)
    history = []
    for _ in tqdm(range(epochs), desc="train Phylo-NN base", unit="epoch", disable=not progress, file=sys.stderr):
        total = 0.0
        for index in _batches(len(images), batch_size, generator):
            x = images[index].to(device)
            with autocast(device, precision):
                reconstruction, vq_loss = model(x)
            loss = F.l1_loss(reconstruction.float(), x) + vq_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(images))
    return history


def train_disentangler(base: VQAutoencoder, model: Disentangler, images: torch.Tensor, targets: torch.Tensor, *,
                       epochs: int, batch_size: int, lr: float, seed: int, device: torch.device,
                       progress: bool = True, precision: str = "float32") -> list[float]:
    """Train the disentangler on the frozen base's features.

    Loss = L1(h, h') + VQ loss + ||W W^T - I||_F + 0.1 (0.5 sum_{k<L-1} CE_k + CE_species)
    + 0.1 * (negative entropy of an adversary's species prediction from the non-phylo codes);
    the adversary itself learns to predict the species from those codes.

    Parameters
    ----------
    images : torch.Tensor, float32, shape (N, 3, S, S), in [-1, 1]
    targets : torch.Tensor, int64, shape (N, L)
        Group of every image at every level (the last level is the species).

    Returns
    -------
    list of float
        Mean disentangler loss per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    base.to(device).eval().requires_grad_(False)
    model.to(device).train()
    n_species = int(targets[:, -1].max()) + 1
    adversary = nn.Linear(model.code_dim * model.codes_per_level * model.levels, n_species).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)
    adversary_optimizer = torch.optim.Adam(adversary.parameters(), lr=lr, betas=BETAS)
    history = []
    for _ in tqdm(range(epochs), desc="train Phylo-NN disentangler", unit="epoch", disable=not progress,
                  file=sys.stderr):
        total = 0.0
        for index in _batches(len(images), batch_size, generator):
            x, y = images[index].to(device), targets[index].to(device)
            with torch.no_grad(), autocast(device, precision):
                h = base.encode(x).float()
            out = model(h)
            ce = [F.cross_entropy(logits, y[:, k]) for k, logits in enumerate(out.level_logits)]
            guess = adversary(out.nonphylo.flatten(1)).log_softmax(1)
            confusion = (guess.exp() * guess).sum(1).mean()  # minimising it spreads the adversary's guess
            loss = (F.l1_loss(out.reconstruction, h) + out.vq_loss + model.orthogonality()
                    + CLASS_WEIGHT * (0.5 * sum(ce[:-1]) + ce[-1]) + ADVERSARY_WEIGHT * confusion)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            adversary_loss = F.cross_entropy(adversary(out.nonphylo.detach().flatten(1)), y[:, -1])
            adversary_optimizer.zero_grad(set_to_none=True)
            adversary_loss.backward()
            adversary_optimizer.step()
            total += loss.item() * len(index)
        history.append(total / len(images))
    model.eval()
    return history


@torch.no_grad()
def generate_codes(base: VQAutoencoder, model: Disentangler, images: torch.Tensor, *, batch_size: int,
                   device: torch.device, precision: str = "float32") -> dict[str, torch.Tensor]:
    """Codes of every image.

    Parameters
    ----------
    images : torch.Tensor, float32, shape (N, 3, S, S), in [-1, 1] (CPU)

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
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
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
