"""The Phylo-NN model (METHODS.md section 5): a VQ autoencoder and a disentangler on its features.

The disentangler turns the frozen encoder's features h (B, C, s, s) into two grids
of discrete codes from one shared codebook: phylo codes, whose levels follow the
phylogeny (level k's head sees levels 0..k and predicts the level-k group), and
non-phylo codes, kept free of species information by an adversary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with a straight-through gradient and commitment loss.

    Parameters
    ----------
    n_codes, dim : int
        Codebook size and code dimension.
    beta : float
        Commitment weight.
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.beta = beta
        self.codebook = nn.Embedding(n_codes, dim)
        self.codebook.weight.data.uniform_(-1.0 / n_codes, 1.0 / n_codes)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (..., dim) -> quantised (..., dim), indices (...) int64, loss (scalar)."""
        flat = z.reshape(-1, z.shape[-1])
        distance = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.weight.t()
                    + self.codebook.weight.pow(2).sum(1)[None])
        indices = distance.argmin(1)
        quantised = self.codebook(indices).view_as(z)
        loss = F.mse_loss(quantised, z.detach()) + self.beta * F.mse_loss(z, quantised.detach())
        return z + (quantised - z).detach(), indices.view(z.shape[:-1]), loss


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block (taming style)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VQAutoencoder(nn.Module):
    """Base autoencoder: images (B, 3, S, S) in [-1, 1] -> features (B, z, S/2^d, S/2^d) -> codes -> images.

    Parameters
    ----------
    channels : int
        Width of the convolutional stages.
    downsample : int
        Number of stride-2 stages d (4 for 256 -> 16, 2 for 64 -> 16).
    z_channels : int
        Feature channels (the disentangler's input).
    n_codes : int
        Base codebook size.
    """

    def __init__(self, channels: int = 128, downsample: int = 4, z_channels: int = 256, n_codes: int = 1024):
        super().__init__()
        down = [nn.Conv2d(3, channels, 3, padding=1)]
        for _ in range(downsample):
            down += [ResBlock(channels), nn.Conv2d(channels, channels, 4, stride=2, padding=1)]
        down += [ResBlock(channels), nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, z_channels, 1)]
        self.encoder = nn.Sequential(*down)
        self.quantizer = VectorQuantizer(n_codes, z_channels)
        up = [nn.Conv2d(z_channels, channels, 3, padding=1), ResBlock(channels)]
        for _ in range(downsample):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                   ResBlock(channels)]
        up += [nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features h (B, z_channels, s, s) before quantisation."""
        return self.encoder(images)

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h -> (quantised h, code indices (B, s, s), VQ loss)."""
        quantised, indices, loss = self.quantizer(h.permute(0, 2, 3, 1))
        return quantised.permute(0, 3, 1, 2), indices, loss

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (B, 3, S, S) and VQ loss."""
        quantised, _, loss = self.quantize(self.encode(images))
        return self.decoder(quantised), loss


@dataclass
class Disentangled:
    """Outputs of :class:`Disentangler` for a batch of B images.

    Attributes
    ----------
    phylo_codes, nonphylo_codes : torch.Tensor, int64, shape (B, P)
        Code indices, P = codes_per_level * levels, row-major over (position, level).
    phylo, nonphylo : torch.Tensor, float, shape (B, code_dim, codes_per_level, levels)
        Quantised code vectors (straight-through).
    reconstruction : torch.Tensor, shape of h
    vq_loss : torch.Tensor, scalar
    level_logits : list of torch.Tensor, each (B, groups_k)
    """

    phylo_codes: torch.Tensor
    nonphylo_codes: torch.Tensor
    phylo: torch.Tensor
    nonphylo: torch.Tensor
    reconstruction: torch.Tensor
    vq_loss: torch.Tensor
    level_logits: list[torch.Tensor]


class Disentangler(nn.Module):
    """Phylo and non-phylo code grids from features, one shared codebook, cumulative level heads.

    Parameters
    ----------
    in_channels, size : int
        Feature channels and side (h is (B, in_channels, size, size)).
    groups : sequence of int
        Number of groups per level, the last being the number of species.
    hidden : int
        Channels of the 1x1 convolution (kept orthogonal); split into ``phylo_channels`` and the rest.
    phylo_channels : int
    code_dim, codes_per_level, n_codes : int
        Code vectors of ``code_dim``, ``codes_per_level`` per level, a codebook of ``n_codes``.
    """

    def __init__(self, in_channels: int, size: int, groups: list[int], *, hidden: int = 128,
                 phylo_channels: int = 64, code_dim: int = 16, codes_per_level: int = 8, n_codes: int = 64):
        super().__init__()
        self.levels, self.code_dim, self.codes_per_level = len(groups), code_dim, codes_per_level
        self.split = (phylo_channels, hidden - phylo_channels)
        self.conv = nn.Conv2d(in_channels, hidden, 1)
        n_code_values = code_dim * codes_per_level * self.levels
        self.norms = nn.ModuleList(nn.LayerNorm([c, size, size]) for c in self.split)
        self.to_codes = nn.ModuleList(nn.Linear(c * size * size, n_code_values) for c in self.split)
        self.from_codes = nn.ModuleList(nn.Linear(n_code_values, c * size * size) for c in self.split)
        self.back = nn.Conv2d(hidden, in_channels, 1)
        self.quantizer = VectorQuantizer(n_codes, code_dim)
        self.heads = nn.ModuleList(nn.Linear(code_dim * codes_per_level * (k + 1), g) for k, g in enumerate(groups))
        self.size = size

    def forward(self, h: torch.Tensor) -> Disentangled:
        """Disentangle features h (B, C, s, s)."""
        batch = h.shape[0]
        parts = torch.split(F.silu(self.conv(h)), self.split, dim=1)
        shape = (batch, self.code_dim, self.codes_per_level, self.levels)
        quantised, indices, vq_loss, rebuilt = [], [], 0.0, []
        for part, norm, to_codes, from_codes in zip(parts, self.norms, self.to_codes, self.from_codes):
            z = to_codes(norm(part).flatten(1)).view(shape)
            q, idx, loss = self.quantizer(z.permute(0, 2, 3, 1))  # (B, position, level, dim)
            q = q.permute(0, 3, 1, 2)
            quantised.append(q)
            indices.append(idx.reshape(batch, -1))  # row-major over (position, level): k = levels * pos + level
            vq_loss = vq_loss + loss
            rebuilt.append(from_codes(q.flatten(1)).view(batch, part.shape[1], self.size, self.size))
        phylo = quantised[0]
        logits = [head(phylo[..., : k + 1].flatten(1)) for k, head in enumerate(self.heads)]
        return Disentangled(indices[0], indices[1], phylo, quantised[1], self.back(torch.cat(rebuilt, 1)),
                            vq_loss, logits)

    def orthogonality(self) -> torch.Tensor:
        """||W W^T - I||_F of the 1x1 convolution's weight W (hidden, in)."""
        weight = self.conv.weight.flatten(1)
        return torch.linalg.matrix_norm(weight @ weight.t() - torch.eye(len(weight), device=weight.device))


def level_positions(levels: int, codes_per_level: int, upto: int) -> torch.Tensor:
    """Indices into a flattened code row of the codes of levels 0..upto (cumulative)."""
    return torch.tensor([levels * pos + level for pos in range(codes_per_level) for level in range(upto + 1)])
