"""INTR: one learned query per class in a DETR-style decoder; its cross-attention maps explain the class.

docs/methods.md, section 4, read from the authors' code (Imageomics/INTR, a near copy of DETR): a CNN backbone
(stride 32) -> 1x1 projection to ``d_model`` -> post-norm transformer encoder with a sine positional
encoding on queries and keys -> decoder whose input starts at zero, with the class queries added to its
queries (self- and cross-attention) and NO positional term on the cross-attention keys -> the decoder's final
LayerNorm -> one ``Linear(d_model, 1)`` shared by every class: logit c from query c. Each head of the last
decoder layer's cross-attention of query c over the h x w positions is one map ("attribute") of class c.

Module and parameter names follow the authors' (``transformer.encoder.layers.0.self_attn.in_proj_weight``,
``presence_vector``, ``query_embed``, ``input_proj``) so their checkpoints load by renaming the backbone
alone (:func:`from_authors`); the backbone is a timm CNN with frozen batch norm, as theirs.
"""

from __future__ import annotations

import copy
import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from traitpipe.models.training import train_classifier

#: The authors' backbone prefix (DETR's ``Joiner(Backbone(body), position encoding)``).
AUTHORS_BACKBONE = "backbone.0.body."
#: Backbone parameters the authors never train: a ResNet's stem and first stage (timm's ResNet names; other
#: timm CNNs name theirs otherwise and train whole at ``backbone_lr``).
FROZEN_BACKBONE = ("conv1.", "bn1.", "layer1.")


def sine_positions(height: int, width: int, channels: int, *, temperature: float = 10000.0,
                   device=None) -> torch.Tensor:
    """DETR's ``PositionEmbeddingSine(channels // 2, normalize=True)`` for an unpadded feature map.

    Parameters
    ----------
    height, width : int
        The feature map's size.
    channels : int
        ``d_model`` (even): the first half encodes y, the second x, sines and cosines interleaved.
    temperature : float

    Returns
    -------
    torch.Tensor, float32, shape (channels, height, width)

    Examples
    --------
    >>> sine_positions(2, 3, 8).shape
    torch.Size([8, 2, 3])
    >>> sine_positions(2, 3, 8)[1].round()  # y's first cosine: cos(2 pi y / h) at rows y = 1, 2
    tensor([[-1., -1., -1.],
            [ 1.,  1.,  1.]])
    """
    features, scale, eps = channels // 2, 2 * math.pi, 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
    y, x = y / (height + eps) * scale, x / (width + eps) * scale
    dim = torch.arange(features, dtype=torch.float32, device=device)
    dim = temperature ** (2 * torch.div(dim, 2, rounding_mode="floor") / features)
    encoded = []
    for axis in (y, x):
        angles = axis[..., None] / dim
        encoded.append(torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=3).flatten(2))
    return torch.cat(encoded, dim=2).permute(2, 0, 1)


class EncoderLayer(nn.Module):
    """DETR's post-norm encoder layer: self-attention with the positions on queries and keys, then the FFN."""

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``src``, ``pos``: (hw, B, d) -> (hw, B, d)."""
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src, need_weights=False)[0]))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(src))))))


class DecoderLayer(nn.Module):
    """DETR's post-norm decoder layer as INTR calls it: the class queries on the queries only."""

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, query_pos: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tgt``, ``query_pos``: (C, B, d); ``memory``: (hw, B, d). Returns the new ``tgt`` and, with
        ``need_weights``, the cross-attention weights per head (B, heads, C, hw), else None."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt, need_weights=False)[0]))
        attended, weights = self.multihead_attn(tgt + query_pos, memory, value=memory, need_weights=need_weights,
                                                average_attn_weights=False)
        tgt = self.norm2(tgt + self.dropout2(attended))
        tgt = self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))
        return tgt, weights


class Stack(nn.Module):
    """``layers`` (named as the authors') and, for the decoder, the final ``norm``."""

    def __init__(self, layer: nn.Module, count: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(count))
        if norm is not None:
            self.norm = norm


class Transformer(nn.Module):
    """DETR's transformer as INTR uses it (post-norm; decoder input zero; no positions on the decoder's keys).

    Parameters
    ----------
    d_model, nheads, enc_layers, dec_layers, dim_feedforward : int
    dropout : float
    """

    def __init__(self, d_model: int, nheads: int, enc_layers: int, dec_layers: int, dim_feedforward: int,
                 dropout: float):
        super().__init__()
        self.d_model = d_model
        self.encoder = Stack(EncoderLayer(d_model, nheads, dim_feedforward, dropout), enc_layers)
        self.decoder = Stack(DecoderLayer(d_model, nheads, dim_feedforward, dropout), dec_layers, nn.LayerNorm(d_model))
        for param in self.parameters():  # the authors' _reset_parameters
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def forward(self, src: torch.Tensor, queries: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decode one query per class from a feature map.

        Parameters
        ----------
        src : torch.Tensor, shape (B, d, h, w)
            The projected backbone features.
        queries : torch.Tensor, shape (C, d)
            The class queries.
        need_weights : bool

        Returns
        -------
        outputs : torch.Tensor, shape (B, C, d)
            The last decoder layer's output after the final LayerNorm.
        weights : torch.Tensor, shape (B, heads, C, h * w), or None
            The last decoder layer's cross-attention per head (rows sum to 1), with ``need_weights``.
        """
        batch, channels, height, width = src.shape
        pos = sine_positions(height, width, channels, device=src.device).to(src.dtype)
        pos = pos.flatten(1).T[:, None].expand(-1, batch, -1)
        memory = src.flatten(2).permute(2, 0, 1)
        for layer in self.encoder.layers:
            memory = layer(memory, pos)
        query_pos = queries[:, None].expand(-1, batch, -1)
        tgt, weights = torch.zeros_like(query_pos), None
        last = len(self.decoder.layers) - 1
        for index, layer in enumerate(self.decoder.layers):
            tgt, weights = layer(tgt, memory, query_pos, need_weights=need_weights and index == last)
        return self.decoder.norm(tgt).transpose(0, 1), weights


class INTR(nn.Module):
    """INTR: a CNN backbone, DETR's transformer and one query per class.

    Parameters
    ----------
    num_classes : int
        C: one learned query per class (``query_embed``).
    backbone : str
        A timm CNN whose last feature map has stride 32 (the authors': ``resnet50``); its batch norms are
        frozen (statistics and affine terms fixed), as the authors'. Random weights: load trained ones with
        :meth:`load_state_dict` or :func:`from_authors`.
    d_model, nheads, enc_layers, dec_layers, dim_feedforward : int
    dropout : float

    Attributes
    ----------
    backbone : timm FeatureListNet
    input_proj : nn.Conv2d(backbone channels, d_model, 1)
    transformer : Transformer
    query_embed : nn.Embedding(num_classes, d_model)
    presence_vector : nn.Linear(d_model, 1)
        Shared by every class query.

    Examples
    --------
    >>> model = INTR(3, backbone="resnet10t", d_model=16, nheads=2, enc_layers=1, dec_layers=1,
    ...              dim_feedforward=32).eval()
    >>> logits, maps = model(torch.zeros(2, 3, 64, 96), return_maps=True)
    >>> tuple(logits.shape), tuple(maps.shape)  # (B, C) and (B, heads, C, h, w) at stride 32
    ((2, 3), (2, 2, 3, 2, 3))
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", d_model: int = 256, nheads: int = 8,
                 enc_layers: int = 6, dec_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.transformer = Transformer(d_model, nheads, enc_layers, dec_layers, dim_feedforward, dropout)
        self.presence_vector = nn.Linear(d_model, 1)
        nn.init.xavier_uniform_(self.presence_vector.weight)  # as the authors' util/misc.py load_model
        nn.init.zeros_(self.presence_vector.bias)
        self.query_embed = nn.Embedding(num_classes, d_model)
        self.backbone = timm.layers.freeze_batch_norm_2d(
            timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(-1,)))
        stride = self.backbone.feature_info.reduction()[-1]
        if stride != 32:
            raise ValueError(f"INTR's backbone must end at stride 32; {backbone}'s last feature map has stride {stride}")
        self.input_proj = nn.Conv2d(self.backbone.feature_info.channels()[-1], d_model, kernel_size=1)
        self.num_classes, self.num_heads = num_classes, nheads

    def forward(self, x: torch.Tensor, return_maps: bool = False):
        """Class logits, and with ``return_maps`` the attention maps of the same pass.

        Parameters
        ----------
        x : torch.Tensor, float32, shape (B, 3, H, W)
            Normalised images.
        return_maps : bool

        Returns
        -------
        logits : torch.Tensor, shape (B, C)
        maps : torch.Tensor, shape (B, heads, C, H / 32, W / 32)
            With ``return_maps``: the last decoder layer's cross-attention of each class query, per head; each
            map sums to 1 over its positions.
        """
        return self.decode(self.backbone(x)[-1], return_maps)

    def decode(self, features: torch.Tensor, return_maps: bool = False):
        """:meth:`forward` from the backbone's feature map (B, channels, h, w) on."""
        src = self.input_proj(features)
        outputs, weights = self.transformer(src, self.query_embed.weight, need_weights=return_maps)
        logits = self.presence_vector(outputs).squeeze(-1)
        if not return_maps:
            return logits
        return logits, weights.unflatten(-1, src.shape[-2:])

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The maps of :meth:`forward` alone: (B, heads, C, H / 32, W / 32), rows distributions."""
        return self.forward(x, return_maps=True)[1]


def from_authors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in the INTR authors' layout (their checkpoints' ``model`` entry) under this module's names.

    Only the backbone's prefix differs (``backbone.0.body.`` -> ``backbone.``); their frozen batch norms
    carry no ``num_batches_tracked``, nor do ours.

    Examples
    --------
    >>> sorted(from_authors({"backbone.0.body.conv1.weight": torch.zeros(1), "query_embed.weight": torch.zeros(1)}))
    ['backbone.conv1.weight', 'query_embed.weight']
    """
    if not any(key.startswith(("transformer.decoder.", "query_embed.")) for key in state):
        raise ValueError("not an INTR checkpoint: no transformer.decoder.* or query_embed.* entries")
    return {("backbone." + key[len(AUTHORS_BACKBONE):] if key.startswith(AUTHORS_BACKBONE) else key): value
            for key, value in state.items()}


def architecture(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The sizes an INTR state dict (either layout) was trained with: ``num_classes``, ``d_model``,
    ``enc_layers``, ``dec_layers``, ``dim_feedforward`` (the head count cannot be read off the weights).

    Examples
    --------
    >>> state = INTR(4, backbone="resnet10t", d_model=16, nheads=2, enc_layers=1, dec_layers=2,
    ...              dim_feedforward=32).state_dict()
    >>> architecture(state)
    {'num_classes': 4, 'd_model': 16, 'enc_layers': 1, 'dec_layers': 2, 'dim_feedforward': 32}
    """
    def count(stack: str) -> int:
        prefix = f"transformer.{stack}.layers."
        return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})

    classes, d_model = state["query_embed.weight"].shape
    return {"num_classes": int(classes), "d_model": int(d_model), "enc_layers": count("encoder"),
            "dec_layers": count("decoder"),
            "dim_feedforward": int(state["transformer.decoder.layers.0.linear1.weight"].shape[0])}


def load_intr(state: dict[str, torch.Tensor], *, backbone: str = "resnet50", nheads: int = 8,
              dropout: float = 0.1) -> INTR:
    """An :class:`INTR` with the weights of ``state`` (this module's layout or the authors'), sized from them.

    Raises
    ------
    ValueError
        Not an INTR state dict, or weights that do not fit ``backbone`` (every key must match).
    """
    state = from_authors(state)
    model = INTR(backbone=backbone, nheads=nheads, dropout=dropout, **architecture(state))
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [key for key in set(expected) & set(state) if expected[key].shape != state[key].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"INTR weights do not fit backbone {backbone!r}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, other shapes {sorted(shapes)[:5]}")
    model.load_state_dict(state)
    return model


def param_groups(model: INTR, backbone_lr: float) -> list[dict]:
    """The authors' two AdamW groups: everything but the backbone at the base rate; the backbone at
    ``backbone_lr`` (0: frozen), its stem and first stage (:data:`FROZEN_BACKBONE`) never trained."""
    backbone = [param for name, param in model.backbone.named_parameters()
                if backbone_lr > 0 and not name.startswith(FROZEN_BACKBONE)]
    rest = [param for name, param in model.named_parameters() if not name.startswith("backbone.")]
    return [{"params": rest}] + ([{"params": backbone, "lr": backbone_lr}] if backbone else [])


def train_intr(model: INTR, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 140, lr: float = 5e-5,
               backbone_lr: float = 1e-5, weight_decay: float = 1e-6, lr_drop: int = 80, clip_norm: float = 0.1,
               batch_size: int = 12, crop_scale: float | None = None, seed: int = 0, device="cpu",
               val: tuple[torch.Tensor, torch.Tensor] | None = None, precision: str = "float32",
               progress: bool = True, max_per_class: int | None = None, workers: int = 0) -> list[dict]:
    """Train INTR in place with the authors' recipe (main.py's defaults): AdamW (``lr``, the backbone at
    ``backbone_lr``, ``weight_decay``), the rates x0.1 after ``lr_drop`` epochs, plain cross-entropy on the
    class logits, no warm-up, each epoch's last partial batch dropped (``drop_last=True``), and gradients
    clipped at ``clip_norm`` over every parameter, the never-trained stem and first stage included, as with
    their ``--finetune`` (which every run of theirs uses). Their frozen stage's gradients are summed over the
    run, never cleared (the optimizer does not hold them); here they are cleared every step.

    Their images are resized to 480-800 pixels (multi-scale); here they come at the collection's size with
    flips and shifts (or crops, ``crop_scale``), as :func:`traitpipe.models.training.train_classifier`.

    Parameters
    ----------
    model : INTR
    images : torch.utils.data.Dataset or torch.Tensor
        Normalised images: a dataset of float32 (3, H, W) items or a tensor (N, 3, H, W) (CPU).
    labels : torch.Tensor, int64, shape (N,)
    epochs, lr, backbone_lr, weight_decay, lr_drop, clip_norm, batch_size, crop_scale, seed
    device : str or torch.device
    val : (images, labels) or None
    precision : str
        "float32" (the authors') or "bfloat16" autocast.
    progress : bool
    max_per_class, workers : int or None, int
        See :func:`traitpipe.models.training.train_classifier`.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``loss``, ``train_accuracy``, ``val_accuracy``.
    """
    return train_classifier(model, images, labels, epochs=epochs, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, linear_probe=False, seed=seed, device=torch.device(device),
                            warmup_epochs=0, label_smoothing=0.0, trainable=param_groups(model, backbone_lr),
                            lr_drop=lr_drop, clip_norm=clip_norm, crop_scale=crop_scale, val=val,
                            progress=progress, desc="train INTR", precision=precision, max_per_class=max_per_class,
                            workers=workers, drop_last=True, clip_every_parameter=True)
