"""taming-transformers' ``VectorQuantizer2`` (``legacy=True``), the quantizer of Phylo-NN's base and disentangler."""

from __future__ import annotations

import torch
from torch import nn


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with a straight-through gradient, weighted as the authors' code weights it.

    The loss is taming's legacy form, which Phylo-NN keeps:
    ``mean((sg[q] - z)^2) + beta * mean((q - sg[z])^2)``: the commitment term (its gradient
    reaches the encoder) has weight 1, the codebook term weight ``beta`` (the reverse of the
    VQ-VAE paper's form; taming's comment calls it a bug kept for compatibility).

    Parameters
    ----------
    n_codes, dim : int
        Codebook size and code dimension; the codebook is ``embedding`` (taming's name),
        initialised uniform(-1/n_codes, 1/n_codes).
    beta : float

    Examples
    --------
    The encoder side gets the full commitment gradient ``2 (z - q) / N``, the codebook a quarter of its own:

    >>> quantizer = VectorQuantizer(2, 1)
    >>> quantizer.embedding.weight.data = torch.tensor([[0.0], [1.0]])
    >>> z = torch.tensor([[0.2], [0.9]], requires_grad=True)
    >>> q, idx, loss = quantizer(z)
    >>> idx.tolist(), q.tolist()
    ([0, 1], [[0.0], [1.0]])
    >>> loss.backward()
    >>> z.grad.flatten(), quantizer.embedding.weight.grad.flatten()
    (tensor([ 0.2000, -0.1000]), tensor([-0.0500,  0.0250]))
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(n_codes, dim)
        self.embedding.weight.data.uniform_(-1.0 / n_codes, 1.0 / n_codes)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (..., dim) -> quantised (..., dim) (straight-through), indices (...) int64, loss (scalar)."""
        flat = z.reshape(-1, z.shape[-1])
        weight = self.embedding.weight
        distance = flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1) - 2 * flat @ weight.t()
        indices = distance.argmin(1)
        quantised = self.embedding(indices).view_as(z)
        loss = torch.mean((quantised.detach() - z) ** 2) + self.beta * torch.mean((quantised - z.detach()) ** 2)
        return z + (quantised - z).detach(), indices.view(z.shape[:-1]), loss
