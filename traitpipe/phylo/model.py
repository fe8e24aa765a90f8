"""The Phylo-NN model (docs/methods.md, section 5): a disentangler on the features of a frozen VQGAN.

The disentangler turns the frozen encoder's features h (B, C, s, s) into two grids
of discrete codes from one shared codebook: phylo codes, whose levels follow the
phylogeny (level k's head sees levels 0..k and predicts the level-k group), and
non-phylo codes, which an adversary tries to keep free of species information.

It follows the authors' code (elhamod/phylonn; module and state-dict names included, so
their checkpoints load with :func:`split_authors_state`): taming's legacy quantizer
weighting (:mod:`traitpipe.phylo.quantize`), the SiLU before the output 1x1 conv, one
codebook for both grids, the non-phylo grid's own number of levels (16 in the fish
model), the adversary of ``traitpipe.phylo.training``. Where traitpipe differs:

- the base VQGAN (:mod:`traitpipe.phylo.vqgan`) is trained with L1 + codebook loss only;
  the authors add an LPIPS perceptual term (VGG weights, which cannot be fetched here)
  and a discriminator whose generator term their code sets to zero;
- learning rates and schedules are the config's (the authors: 5e-6 with cosine warm
  restarts every 150 epochs, batch 5); Adam betas (0.5, 0.9) as theirs;
- one forward pass per batch serves both the disentangler's and the adversary's step
  (the authors' Lightning loop runs a second forward after the first step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from traitpipe.phylo.levels import head_name
from traitpipe.phylo.quantize import VectorQuantizer

#: Phylo-NN's input normalisation (mean, std per channel): pixels in [-1, 1].
MEAN_STD = ([0.5] * 3, [0.5] * 3)


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


def _mlp(in_shape: Sequence[int], out_shape: Sequence[int], normalize: bool) -> nn.Sequential:
    """The authors' ``make_MLP`` with one layer: [LayerNorm,] Flatten, Linear, Unflatten (no nonlinearity)."""
    layers: list[nn.Module] = [nn.LayerNorm(list(in_shape))] if normalize else []
    layers += [nn.Flatten(), nn.Linear(math.prod(in_shape), math.prod(out_shape)), nn.Unflatten(1, tuple(out_shape))]
    return nn.Sequential(*layers)


class ClassifierLayer(nn.Module):
    """The authors' level head: ``seq`` = Flatten, Linear."""

    def __init__(self, in_features: int, classes: int):
        super().__init__()
        self.seq = nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.seq(codes)


class Disentangler(nn.Module):
    """Phylo and non-phylo code grids from features, one shared codebook, cumulative level heads.

    The authors' ``PhyloDisentangler`` (elhamod/phylonn ``scripts/models/phyloautoencoder.py``),
    with their module and state-dict names:

    - ``conv_in``: 1x1 conv ``in_channels -> hidden``, SiLU (kept orthogonal); split into
      ``phylo_channels`` and the rest;
    - ``mlp_in`` / ``mlp_in_non_attribute``: LayerNorm, Flatten, Linear to the code grid
      (code_dim, codes_per_level, levels) / (code_dim, codes_per_level, nonphylo_levels);
    - ``quantize``: one codebook shared by both grids (:class:`~traitpipe.phylo.quantize.VectorQuantizer`);
    - ``mlp_out`` / ``mlp_out_non_attribute``: Flatten, Linear back to the feature channels;
      concatenated, then ``conv_out``: SiLU and a 1x1 conv back to ``in_channels``;
    - ``classification_layers``: the head of level k sees the phylo codes of levels 0..k
      ("033distance", ..., "class" for the species);
    - ``codebook_mapping_layers``: the adversary's map from the non-phylo grid to the phylo grid,
      read by the species head (see ``traitpipe.phylo.training``).

    Parameters
    ----------
    in_channels, size : int
        Feature channels and side (h is (B, in_channels, size, size)).
    groups : sequence of int
        Number of groups per level, the last being the number of species.
    level_names : sequence of str
        Names of the ancestor levels' heads (``len(groups) - 1``): :func:`head_name` of each
        level's relative distance for levels from a tree ("033distance", as the authors), or
        the taxonomy ranks' names. The species head is "class".
    hidden : int
    phylo_channels : int
    code_dim, codes_per_level, n_codes : int
        Code vectors of ``code_dim``, ``codes_per_level`` per level, a codebook of ``n_codes``.
    nonphylo_levels : int
        Levels of the non-phylo grid (the authors' fish model: 16, so 128 non-phylo codes).
    """

    def __init__(self, in_channels: int, size: int, groups: Sequence[int], level_names: Sequence[str], *,
                 hidden: int = 128, phylo_channels: int = 64, code_dim: int = 16, codes_per_level: int = 8,
                 n_codes: int = 64, nonphylo_levels: int = 16):
        super().__init__()
        if len(level_names) != len(groups) - 1:
            raise ValueError(f"{len(groups)} levels need {len(groups) - 1} level names, got {len(level_names)}")
        self.levels, self.code_dim, self.codes_per_level = len(groups), code_dim, codes_per_level
        self.split = (phylo_channels, hidden - phylo_channels)
        phylo_grid = (code_dim, codes_per_level, self.levels)
        nonphylo_grid = (code_dim, codes_per_level, nonphylo_levels)
        self.conv_in = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.SiLU())
        self.mlp_in = _mlp((self.split[0], size, size), phylo_grid, normalize=True)
        self.mlp_out = _mlp(phylo_grid, (self.split[0], size, size), normalize=False)
        self.mlp_in_non_attribute = _mlp((self.split[1], size, size), nonphylo_grid, normalize=True)
        self.mlp_out_non_attribute = _mlp(nonphylo_grid, (self.split[1], size, size), normalize=False)
        self.quantize = VectorQuantizer(n_codes, code_dim)
        self.conv_out = nn.Sequential(nn.SiLU(), nn.Conv2d(hidden, in_channels, 1))
        names = [*level_names, head_name(None)]
        self.head_names = names
        self.classification_layers = nn.ModuleDict({
            name: ClassifierLayer(code_dim * codes_per_level * (k + 1), g)
            for k, (name, g) in enumerate(zip(names, groups))})
        self.codebook_mapping_layers = _mlp(nonphylo_grid, phylo_grid, normalize=False)

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grid (B, dim, positions, levels) -> quantised grid, indices (B, positions * levels), loss."""
        q, indices, loss = self.quantize(z.permute(0, 2, 3, 1))  # (B, position, level, dim), as taming's NHWC
        return q.permute(0, 3, 1, 2), indices.reshape(len(z), -1), loss  # row-major: k = levels * pos + level

    def forward(self, h: torch.Tensor) -> Disentangled:
        """Disentangle features h (B, C, s, s)."""
        phylo_part, other_part = torch.split(self.conv_in(h), self.split, dim=1)
        phylo, phylo_codes, phylo_loss = self._quantize(self.mlp_in(phylo_part))
        nonphylo, nonphylo_codes, nonphylo_loss = self._quantize(self.mlp_in_non_attribute(other_part))
        rebuilt = torch.cat([self.mlp_out(phylo), self.mlp_out_non_attribute(nonphylo)], 1)
        logits = [self.classification_layers[name](phylo[..., : k + 1]) for k, name in enumerate(self.head_names)]
        return Disentangled(phylo_codes, nonphylo_codes, phylo, nonphylo, self.conv_out(rebuilt),
                            phylo_loss + nonphylo_loss, logits)

    def orthogonality(self) -> torch.Tensor:
        """||W W^T - I||_F of ``conv_in``'s 1x1 weight W (hidden, in): the authors' kernel orthogonality."""
        weight = self.conv_in[0].weight.flatten(1)
        return torch.linalg.matrix_norm(weight @ weight.t() - torch.eye(len(weight), device=weight.device))


def split_authors_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A Phylo-NN checkpoint's state dict in the authors' layout -> (base VQGAN state, disentangler state).

    The authors' Lightning checkpoint (``state_dict`` of ``PhyloVQVAE``) holds the taming
    VQGAN under ``encoder.``, ``decoder.``, ``quantize.``, ``quant_conv.``, ``post_quant_conv.``
    and the disentangler under ``phylo_disentangler.``. Loss modules (``loss.``, the
    disentangler's unused LPIPS ``phylo_disentangler.loss.``) hold no model weights and are dropped.
    """
    base, disentangler = {}, {}
    for key, value in state.items():
        if key.startswith("phylo_disentangler."):
            key = key.removeprefix("phylo_disentangler.")
            if not key.startswith("loss."):
                disentangler[key] = value
        elif not key.startswith("loss."):
            base[key] = value
    return base, disentangler


def level_positions(levels: int, codes_per_level: int, upto: int) -> torch.Tensor:
    """Indices into a flattened code row of the codes of levels 0..upto (cumulative)."""
    return torch.tensor([levels * pos + level for pos in range(codes_per_level) for level in range(upto + 1)])
