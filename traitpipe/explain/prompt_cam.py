"""Prompt-CAM: class-specific prompts on a frozen ViT, per-class attention maps, ranked trait heads.

docs/methods.md, section 3. Every block sees [P_1..P_C, CLS, (registers), patches]; the prompt
outputs are dropped after each block but the last, where class c's logit is
``head(final_norm(y_c))``. The maps are the last block's attention of prompt c over the
patches, one per head. Removing ("blurring") head h for class c sets that head's
pre-softmax attention row c to 0, which changes only class c's logit, so a candidate
removal is scored by recomputing token c's path through the last block alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


#: The input normalisation of the Prompt-CAM authors' checkpoints (``data/dataset/cub.py``: timm's
#: IMAGENET_INCEPTION_MEAN and _STD, for every backbone). Prompts trained here use the run classifier's instead:
#: its frozen backbone was trained with it.
RELEASED_MEAN = RELEASED_STD = (0.5, 0.5, 0.5)


class PromptCAM(nn.Module):
    """Class prompts on a frozen timm VisionTransformer.

    Parameters
    ----------
    backbone : timm.models.vision_transformer.VisionTransformer
        Frozen; its own classifier head is removed.
    num_classes : int
        C, the number of classes (one prompt per class and block).
    prompt_dropout : float
        Dropout on the prompts while training.

    Attributes
    ----------
    prompts : nn.Parameter, shape (depth, C, D)
    head : nn.Linear(D, 1)
        Shared by all classes.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, prompt_dropout: float = 0.0):
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone.requires_grad_(False)
        depth, dim = len(backbone.blocks), backbone.embed_dim
        patch = backbone.patch_embed.patch_size[0]
        bound = math.sqrt(6.0 / (3 * patch * patch + dim))
        self.prompts = nn.Parameter(torch.empty(depth, num_classes, dim).uniform_(-bound, bound))
        self.head = nn.Linear(dim, 1)
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.num_classes = num_classes

    @property
    def num_heads(self) -> int:
        return self.backbone.blocks[-1].attn.num_heads

    def last_block_input(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens entering the last block, prompts first: (B, C + prefix + patches, D)."""
        backbone = self.backbone
        tokens = backbone.norm_pre(backbone.patch_drop(backbone._pos_embed(backbone.patch_embed(x))))
        batch = tokens.shape[0]
        prompts = self.prompt_dropout(self.prompts)
        for depth, block in enumerate(backbone.blocks):
            tokens = torch.cat([prompts[depth].expand(batch, -1, -1), tokens], 1)
            if depth == len(backbone.blocks) - 1:
                return tokens
            tokens = block(tokens)[:, self.num_classes:]
        raise RuntimeError("the backbone has no blocks")

    def _last_attention_logits(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-softmax attention logits (B, heads, T, T) of the last block and its values (B, heads, T, d)."""
        attn = self.backbone.blocks[-1].attn
        normed = self.backbone.blocks[-1].norm1(tokens)
        batch, count, _ = normed.shape
        qkv = attn.qkv(normed).reshape(batch, count, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        return (q * attn.scale) @ k.transpose(-2, -1), v

    def _class_logits(self, tokens: torch.Tensor, logits: torch.Tensor, v: torch.Tensor,
                      rows: torch.Tensor) -> torch.Tensor:
        """Finish the last block for some token rows and score them with the head.

        tokens (B, T, D) block input; logits (B, heads, R, T) their pre-softmax attention rows
        (possibly blurred); v (B, heads, T, d); rows (R,) the token indices. Returns (B, R).
        """
        block, attn = self.backbone.blocks[-1], self.backbone.blocks[-1].attn
        mixed = logits.softmax(-1) @ v  # (B, heads, R, d)
        mixed = attn.norm(mixed.transpose(1, 2).reshape(tokens.shape[0], len(rows), attn.attn_dim))
        x = tokens[:, rows] + block.drop_path1(block.ls1(attn.proj_drop(attn.proj(mixed))))
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return self.head(self.backbone.norm(x))[..., 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) for images (B, 3, H, W)."""
        tokens = self.last_block_input(x)
        logits, v = self._last_attention_logits(tokens)
        rows = torch.arange(self.num_classes, device=x.device)
        return self._class_logits(tokens, logits[:, :, : self.num_classes], v, rows)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw last-block attention of every class prompt over the patches: (B, heads, C, gh, gw)."""
        logits, _ = self._last_attention_logits(self.last_block_input(x))
        return self._maps(logits)

    def _maps(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, heads, C, gh, gw) prompt attention over the patches from the last block's logits."""
        start = self.num_classes + self.backbone.num_prefix_tokens
        attention = logits[:, :, : self.num_classes].softmax(-1)[..., start:]
        return attention.reshape(*attention.shape[:3], *self.backbone.patch_embed.grid_size)

    def blurred_logit(self, x: torch.Tensor, target: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        """Logit of the target class with some heads removed, by a full forward pass.

        removed : bool (B, heads). Returns (B,).
        """
        tokens = self.last_block_input(x)
        logits, v = self._last_attention_logits(tokens)
        index = torch.arange(len(x), device=x.device)
        rows = logits[index, :, target]  # (B, heads, T)
        rows = torch.where(removed[..., None], torch.zeros_like(rows), rows)
        logits = logits.clone()
        logits[index, :, target] = rows
        all_rows = torch.arange(self.num_classes, device=x.device)
        return self._class_logits(tokens, logits[:, :, : self.num_classes], v, all_rows)[index, target]

    @torch.no_grad()
    def rank_heads(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Heads of the last block from most to least important for the target class.

        Greedy: remove, one at a time, the head whose removal keeps softmax(s)[target]
        highest (the first on ties); the reverse removal order is the ranking. Each
        round scores every remaining head at once by recomputing only the target
        token's path through the last block.

        Parameters
        ----------
        x : torch.Tensor, float, shape (B, 3, H, W)
        target : torch.Tensor, int64, shape (B,)

        Returns
        -------
        torch.Tensor, int64, shape (B, heads)
        """
        ranking, _ = self.rank_heads_with_probabilities(x, target)
        return ranking

    @torch.no_grad()
    def rank_heads_with_probabilities(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`rank_heads` and, per rank r, the target's probability with the heads ranked above r removed.

        Returns (ranking (B, heads) int64, probability (B, heads) float32; probability[:, 0] is unblurred).
        """
        tokens = self.last_block_input(x)
        logits, v = self._last_attention_logits(tokens)
        all_rows = torch.arange(self.num_classes, device=x.device)
        class_logits = self._class_logits(tokens, logits[:, :, : self.num_classes], v, all_rows)  # (B, C)
        return self._rank(tokens, logits, v, class_logits, target)

    @torch.no_grad()
    def explain(self, x: torch.Tensor, target: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything the explain step needs from one pass through the backbone.

        Parameters
        ----------
        x : torch.Tensor, float, (B, 3, H, W)
        target : torch.Tensor, int64, (B,), or None
            The class whose prompt queries each image: the authors localise traits with the true
            class's prompt. -1 entries and None = the predicted class.

        Returns
        -------
        target : torch.Tensor, int64, (B,)
            The class explained.
        predicted : torch.Tensor, int64, (B,)
            The class the model predicts. The authors (``basic_vis``) rank heads only where it is the true
            class; elsewhere a ranking says what the model looks at for a class it did not see.
        maps : torch.Tensor, float, (B, heads, gh, gw)
            The target prompt's attention maps (see :meth:`attention_maps`).
        ranking, probability : torch.Tensor, (B, heads)
            As :meth:`rank_heads_with_probabilities` for the target.
        """
        tokens = self.last_block_input(x)
        logits, v = self._last_attention_logits(tokens)
        all_rows = torch.arange(self.num_classes, device=x.device)
        class_logits = self._class_logits(tokens, logits[:, :, : self.num_classes], v, all_rows)
        predicted = class_logits.argmax(1)
        target = predicted if target is None else torch.where(target < 0, predicted, target.to(x.device).long())
        maps = self._maps(logits)[torch.arange(len(x), device=x.device), :, target]
        return (target, predicted, maps, *self._rank(tokens, logits, v, class_logits, target))

    def _rank(self, tokens: torch.Tensor, logits: torch.Tensor, v: torch.Tensor, class_logits: torch.Tensor,
              target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The greedy ranking and probabilities from the last block's input, attention logits and values."""
        batch, heads, device = len(tokens), self.num_heads, tokens.device
        index = torch.arange(batch, device=device)
        own = logits[index, :, target]  # (B, heads, T): the target prompt's attention rows
        token = tokens[index, target][:, None]  # (B, 1, D)
        removed = torch.zeros(batch, heads, dtype=torch.bool, device=device)
        order = []
        eye = torch.eye(heads, dtype=torch.bool, device=device)
        for _ in range(heads):
            trial = removed[:, None] | eye[None]  # (B, candidates, heads)
            rows = torch.where(trial[..., None], torch.zeros_like(own)[:, None], own[:, None])  # (B, K, heads, T)
            rows = rows.reshape(batch * heads, heads, 1, -1)
            values = v.repeat_interleave(heads, 0)
            scores = self._class_logits(token.repeat_interleave(heads, 0), rows, values,
                                        torch.zeros(1, dtype=torch.long, device=device))
            scores = scores.view(batch, heads)
            probability = _target_probability(class_logits, target, scores)  # (B, candidates)
            probability = probability.masked_fill(removed, -1.0)
            best = probability.argmax(1)  # first maximum on ties
            order.append(best)
            removed = removed | F.one_hot(best, heads).bool()
        ranking = torch.stack(order[::-1], 1)
        # probability after removing the heads ranked above each rank
        probs = [_target_probability(class_logits, target, class_logits[index, target][:, None])[:, 0]]
        blurred = torch.zeros(batch, heads, dtype=torch.bool, device=device)
        for rank in range(heads - 1):
            blurred = blurred | F.one_hot(ranking[:, rank], heads).bool()
            rows = torch.where(blurred[..., None], torch.zeros_like(own), own)[:, :, None]
            score = self._class_logits(token, rows, v, torch.zeros(1, dtype=torch.long, device=device))
            probs.append(_target_probability(class_logits, target, score)[:, 0])
        return ranking, torch.stack(probs, 1).float()


def _target_probability(class_logits: torch.Tensor, target: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """softmax(s)[target] when the target's logit is replaced by each column of ``score`` (B, K) -> (B, K)."""
    index = torch.arange(len(target), device=target.device)
    others = class_logits.clone()
    others[index, target] = float("-inf")
    rest = torch.logsumexp(others, 1, keepdim=True)
    return torch.sigmoid(score - rest)


def greedy_rank_heads(model: PromptCAM, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The plain greedy procedure, a full forward pass per candidate head: what :meth:`PromptCAM.rank_heads`
    computes with the last block alone (bench/prompt_cam.py times the two; tests/test_prompt_cam.py checks
    ``rank_heads`` against the authors' own code).

    Returns (B, heads) int64.
    """
    batch, heads = len(x), model.num_heads
    index = torch.arange(batch)
    with torch.no_grad():
        full = model(x)
        removed = torch.zeros(batch, heads, dtype=torch.bool)
        order = []
        for _ in range(heads):
            probability = torch.full((batch, heads), -1.0)
            for h in range(heads):
                candidate = removed.clone()
                candidate[:, h] = True
                logit = model.blurred_logit(x, target, candidate)
                logits = full.clone()
                logits[index, target] = logit
                fresh = logits.softmax(1)[index, target]
                probability[:, h] = torch.where(removed[:, h], torch.tensor(-1.0), fresh)
            best = probability.argmax(1)
            order.append(best)
            removed[index, best] = True
    return torch.stack(order[::-1], 1)


def load_released(model: PromptCAM, state: dict[str, torch.Tensor]) -> PromptCAM:
    """Load a state dict in the Prompt-CAM authors' layout into ``model``.

    Their checkpoints hold the whole model: backbone weights under the backbone's
    own names, ``vpt.prompt_embeddings`` (depth, C, D), ``head.weight`` (1, D) and
    ``head.bias`` (1,).

    Raises
    ------
    ValueError
        A missing prompt or head entry, prompts of another shape, or backbone keys
        that do not fit.
    """
    for key in ("vpt.prompt_embeddings", "head.weight", "head.bias"):
        if key not in state:
            raise ValueError(f"not a Prompt-CAM checkpoint: no {key!r}")
    prompts = state["vpt.prompt_embeddings"]
    if prompts.shape != model.prompts.shape:
        raise ValueError(f"prompts of shape {tuple(prompts.shape)}, the model expects {tuple(model.prompts.shape)} "
                         "(depth, classes, dim)")
    backbone = {k: v for k, v in state.items() if not k.startswith(("vpt.", "head."))}
    missing, unexpected = model.backbone.load_state_dict(backbone, strict=False)
    if missing or unexpected:
        raise ValueError(f"backbone weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        model.prompts.copy_(prompts)
        model.head.weight.copy_(state["head.weight"])
        model.head.bias.copy_(state["head.bias"])
    return model
