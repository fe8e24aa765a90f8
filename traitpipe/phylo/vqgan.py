"""Phylo-NN's base autoencoder: taming-transformers' VQGAN (encoder, codebook, decoder), as the authors use it.

The modules and their state-dict names follow ``taming/modules/diffusionmodules/model.py``
(``Encoder``, ``Decoder``, ``ResnetBlock``, ``AttnBlock``, ``Downsample``, ``Upsample``) and
``taming/models/vqgan.py`` (``VQModel``: ``encoder``, ``quant_conv``, ``quantize``,
``post_quant_conv``, ``decoder``), so a checkpoint of the authors' loads as it is. The fish
model of Phylo-NN is ``VQGAN(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
attn_resolutions=(16,), resolution=256, z_channels=256, embed_dim=256, n_embed=1024)``:
256 x 256 images, a 16 x 16 latent. Phylo-NN's disentangler reads the encoder's output
(before ``quant_conv``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from traitpipe.phylo.quantize import VectorQuantizer


def normalize(channels: int, groups: int = 32) -> nn.GroupNorm:
    """taming's ``Normalize``: GroupNorm with 32 groups, eps 1e-6."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, with a 1x1 ``nin_shortcut`` when the width changes (no time embedding)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the positions of a feature map, with 1x1 q, k, v, proj_out."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = normalize(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, height, width = h.shape
        q, k, v = (layer(h).reshape(b, c, height * width) for layer in (self.q, self.k, self.v))
        weights = torch.softmax(q.transpose(1, 2) @ k * c ** -0.5, dim=2)  # (b, query, key)
        return x + self.proj_out((v @ weights.transpose(1, 2)).reshape(b, c, height, width))


class Downsample(nn.Module):
    """Pad (0, 1, 0, 1), then a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    level = nn.Module()
    level.block, level.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
    return level


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """One resolution level: each residual block, followed by its attention block where the level has them."""
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


def _middle(channels: int, dropout: float, groups: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout, groups)
    mid.attn_1 = AttnBlock(channels, groups)
    mid.block_2 = ResnetBlock(channels, channels, dropout, groups)
    return mid


class Encoder(nn.Module):
    """taming's Encoder (``double_z=False``): images (B, 3, R, R) -> features (B, z_channels, R/2^(L-1), same)."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 resolution: int, z_channels: int, in_channels: int = 3, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        size, width = resolution, ch
        for i, mult in enumerate(ch_mult):
            blocks, attn = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(width, ch * mult, dropout, groups))
                width = ch * mult
                if size in attn_resolutions:
                    attn.append(AttnBlock(width, groups))
            level = _level(blocks, attn)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(width)
                size //= 2
            self.down.append(level)
        self.mid = _middle(width, dropout, groups)
        self.norm_out = normalize(width, groups)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """taming's Decoder: features (B, z_channels, r, r) -> images (B, 3, r * 2^(L-1), same).

    ``up[i]`` is resolution level i (``up[0]`` the full size), run from the last to the first.
    """

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 resolution: int, z_channels: int, out_ch: int = 3, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        width = ch * ch_mult[-1]
        size = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = _middle(width, dropout, groups)
        levels = []
        for i in reversed(range(len(ch_mult))):
            blocks, attn = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(width, ch * ch_mult[i], dropout, groups))
                width = ch * ch_mult[i]
                if size in attn_resolutions:
                    attn.append(AttnBlock(width, groups))
            level = _level(blocks, attn)
            if i != 0:
                level.upsample = Upsample(width)
                size *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(width, groups)
        self.conv_out = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGAN(nn.Module):
    """taming's VQModel without its GAN loss: encoder -> quant_conv -> codebook -> post_quant_conv -> decoder.

    Parameters
    ----------
    ch, ch_mult, num_res_blocks, attn_resolutions, resolution, z_channels : see :class:`Encoder`
        ``resolution`` is the image side; the latent side is ``resolution / 2 ** (len(ch_mult) - 1)``.
    embed_dim, n_embed : int
        Code dimension and codebook size of the base quantizer.
    dropout : float
    groups : int
        GroupNorm groups (taming: 32; every width must be a multiple).

    Examples
    --------
    >>> model = VQGAN(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16,
    ...               z_channels=32, embed_dim=8, n_embed=16)
    >>> model.encode(torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 32, 8, 8])
    """

    def __init__(self, *, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), resolution: int = 256, z_channels: int = 256,
                 embed_dim: int = 256, n_embed: int = 1024, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        shape = {"ch": ch, "ch_mult": tuple(ch_mult), "num_res_blocks": num_res_blocks,
                 "attn_resolutions": tuple(attn_resolutions), "resolution": resolution, "z_channels": z_channels,
                 "dropout": dropout, "groups": groups}
        self.encoder = Encoder(**shape)
        self.decoder = Decoder(**shape)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.feature_size = resolution // 2 ** (len(ch_mult) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features h (B, z_channels, s, s): what Phylo-NN's disentangler reads."""
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (B, 3, R, R) of images in [-1, 1], and the codebook loss."""
        h = self.quant_conv(self.encode(images)).permute(0, 2, 3, 1)
        quantised, _, loss = self.quantize(h)
        return self.decoder(self.post_quant_conv(quantised.permute(0, 3, 1, 2))), loss
