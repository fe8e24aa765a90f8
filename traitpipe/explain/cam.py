"""Grad-CAM family and Finer-CAM, batched, in torch on the model's device.

A CAM method is one small function in :data:`METHODS`: it turns a target layer's
activations and the gradients of the objective at that layer into a map. The
objective is the target class's logit (the base method) or, with ``alpha``, the
Finer-CAM objective that compares the target with its most similar classes
(docs/methods.md, section 2). One forward and one backward pass serve a whole batch:
samples are independent in eval mode, so the per-sample objectives are summed.

Only what a CAM needs is computed: everything before the first target layer runs
without autograd, and gradients are taken with respect to the target layers'
outputs only (no parameter gradients).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from traitpipe.registry import Registry

#: (activations (B, C, h, w), gradients (B, C, h, w)) -> map (B, h, w), before the ReLU
CamMethod = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = Registry("CAM method")


def _channel_weighted(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    return (weights[:, :, None, None] * activations).sum(1)


@METHODS.register("gradcam")
def gradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channels weighted by their spatially averaged gradient."""
    return _channel_weighted(grads.mean((2, 3)), activations)


@METHODS.register("gradcampp")
def gradcampp(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19), as pytorch-grad-cam computes it."""
    g2 = grads.pow(2)
    total = activations.sum((2, 3), keepdim=True)
    aij = g2 / (2 * g2 + total * g2 * grads + 1e-6)
    aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
    return _channel_weighted((grads.clamp(min=0) * aij).sum((2, 3)), activations)


@METHODS.register("xgradcam")
def xgradcam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: gradients weighted by the normalised activations."""
    total = activations.sum((2, 3), keepdim=True)
    return _channel_weighted((grads * activations / (total + 1e-7)).sum((2, 3)), activations)


@METHODS.register("hirescam")
def hirescam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: element-wise gradient times activation, summed over channels."""
    return (grads * activations).sum(1)


@METHODS.register("gradcamelementwise")
def gradcamelementwise(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM element-wise: the positive part of gradient times activation, summed over channels."""
    return (grads * activations).clamp(min=0).sum(1)


@METHODS.register("layercam")
def layercam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: positive gradients times activations, summed over channels."""
    return (grads.clamp(min=0) * activations).sum(1)


def default_layers(model: nn.Module) -> list[str]:
    """The usual target layer: the last block's first norm of a ViT (timm's ``norm1``, open_clip's ``ln_1``),
    else timm's last feature stage. Returned by its name in ``model.named_modules()``."""
    if hasattr(model, "blocks"):
        last = model.blocks[-1]
        norm = getattr(last, "norm1", None) or getattr(last, "ln_1")
        return [next(name for name, module in model.named_modules() if module is norm)]
    info = getattr(model, "feature_info", None)
    if info:
        return [info[-1]["module"]]
    raise ValueError(f"no default target layer for {type(model).__name__}: name one in the config")


def resolve_layers(model: nn.Module, layers: Sequence[nn.Module | str]) -> list[nn.Module]:
    """Turn module names (as in ``model.named_modules()``) into modules.

    Raises
    ------
    KeyError
        For a name the model does not have, listing the nearest module names.
    """
    modules = dict(model.named_modules())
    found = []
    for layer in layers:
        if isinstance(layer, nn.Module):
            found.append(layer)
            continue
        if layer not in modules:
            near = difflib.get_close_matches(layer, list(modules), n=5, cutoff=0.4)
            raise KeyError(f"the model has no module {layer!r}; nearest names: {', '.join(near) or '(none)'}")
        found.append(modules[layer])
    return found


def token_grid(model: nn.Module, n_tokens: int, image_size: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """(prefix tokens, grid height, grid width) of a ViT token sequence of length ``n_tokens``.

    Uses timm's ``num_prefix_tokens`` (class and register tokens) and the patch grid of the input, an image of
    ``image_size`` (H, W), as timm's ``patch_embed`` lays it (a ViT with ``dynamic_img_size`` takes any size, as
    the Finer-CAM authors' DINOv2 does); then ``patch_embed.grid_size``; otherwise the largest square that the
    tokens can hold after 0 or 1 prefix tokens.
    """
    prefix = getattr(model, "num_prefix_tokens", None)
    embed = getattr(model, "patch_embed", None)
    grids = [getattr(embed, "grid_size", None)]
    if image_size is not None and hasattr(embed, "dynamic_feat_size"):
        grids.insert(0, embed.dynamic_feat_size(tuple(image_size)))
    for grid in grids:
        if prefix is not None and grid is not None and n_tokens - prefix == grid[0] * grid[1]:
            return prefix, int(grid[0]), int(grid[1])
    for prefix in ([prefix] if prefix is not None else []) + [0, 1]:
        side = int(round((n_tokens - prefix) ** 0.5))
        if side * side == n_tokens - prefix:
            return prefix, side, side
    raise ValueError(f"cannot lay {n_tokens} tokens on a square grid: pass reshape_transform")


def _to_maps(model: nn.Module, tensor: torch.Tensor, reshape_transform,
             image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Layer output -> (B, C, h, w), for input images of ``image_size`` (H, W)."""
    if reshape_transform is not None:
        return reshape_transform(tensor)
    if tensor.ndim == 4:
        return tensor
    if tensor.ndim == 3:  # ViT tokens (B, N, C)
        prefix, gh, gw = token_grid(model, tensor.shape[1], image_size)
        return tensor[:, prefix:].reshape(tensor.shape[0], gh, gw, tensor.shape[2]).permute(0, 3, 1, 2)
    raise ValueError(f"target layer output of shape {tuple(tensor.shape)}: expected (B,C,h,w) or (B,N,C)")


def similar_classes(logits: torch.Tensor, target: torch.Tensor, n: int = 3) -> torch.Tensor:
    """The classes the model finds most similar to the target: ranks 1..n by ``|y - y_t|``.

    Parameters
    ----------
    logits : torch.Tensor, float, shape (B, K)
    target : torch.Tensor, int64, shape (B,)
    n : int
        Clamped to K - 1.

    Returns
    -------
    torch.Tensor, int64, shape (B, min(n, K - 1))
        Most similar first; never the target itself (rank 0).

    Examples
    --------
    >>> similar_classes(torch.tensor([[4.0, 3.5, -1.0, 3.9]]), torch.tensor([0]), 2)
    tensor([[3, 1]])
    """
    y_t = logits.gather(1, target[:, None])
    distance = (logits - y_t).abs().detach()
    distance.scatter_(1, target[:, None], -1.0)  # the target is always rank 0
    return distance.argsort(dim=1, stable=True)[:, 1:1 + min(n, logits.shape[1] - 1)]


def finer_objective(logits: torch.Tensor, target: torch.Tensor, alpha: float | None,
                    n_compare: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample objective to explain.

    Parameters
    ----------
    logits : torch.Tensor, float, shape (B, K)
    target : torch.Tensor, int64, shape (B,)
    alpha : float or None
        None: the target's logit (the base method). A float: Finer-CAM,
        ``sum_i p_i (y_t - alpha y_i) / (sum_i p_i + 1e-9)`` over the classes ranked
        1..n_compare by ``|y - y_t|``, ``p = softmax(y)`` (not detached).
    n_compare : int
        Number of compared classes, clamped to K - 1.

    Returns
    -------
    objective : torch.Tensor, float, shape (B,)
    compared : torch.Tensor, int64, shape (B, n) with n = min(n_compare, K - 1), or (B, 0) for the base method
    """
    y_t = logits.gather(1, target[:, None])
    if alpha is None:
        return y_t[:, 0], target.new_zeros((len(target), 0))
    compared = similar_classes(logits, target, n_compare)
    weights = logits.softmax(1).gather(1, compared)
    objective = (weights * (y_t - alpha * logits.gather(1, compared))).sum(1) / (weights.sum(1) + 1e-9)
    return objective, compared


@dataclass
class CamPass:
    """What one batched CAM pass yields.

    Attributes
    ----------
    raw : list of torch.Tensor, float32, each (B, h_l, w_l)
        ReLU of the method's map per target layer, at that layer's resolution.
    logits : torch.Tensor, float32, shape (B, K)
    target : torch.Tensor, int64, shape (B,)
    compared : torch.Tensor, int64, shape (B, n)
        Finer-CAM's compared classes (n = 0 for the base method).
    """

    raw: list[torch.Tensor]
    logits: torch.Tensor
    target: torch.Tensor
    compared: torch.Tensor


def cam_pass(model: nn.Module, images: torch.Tensor, target_layers: Sequence[nn.Module | str], *,
             method: str = "gradcam", alphas: Sequence[float | None] = (None,), target: torch.Tensor | None = None,
             reshape_transform: Callable | None = None, n_compare: int = 3) -> list[CamPass]:
    """One forward pass and one backward pass per alpha over a batch.

    The arguments are those of :func:`compute_cams`, with ``alphas`` a sequence:
    the forward pass is shared, so several comparison strengths cost one
    backward pass each. Returns one :class:`CamPass` per alpha.
    """
    combine = METHODS[method]  # a KeyError naming the known methods
    layers = resolve_layers(model, target_layers)
    outputs: list[torch.Tensor | None] = [None] * len(layers)

    def hook(index: int):
        def keep(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"target layer {type(module).__name__} returns {type(output).__name__}, not a tensor")
            if not torch.is_grad_enabled():  # the first target layer: autograd starts here
                torch.set_grad_enabled(True)
                output = output.detach().requires_grad_(True)
            outputs[index] = output
            return output.clone()  # in-place ops downstream must not touch what we keep
        return keep

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    passes = []
    try:
        with torch.no_grad():
            logits = model(images)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"the model returned {shape}; a classifier must return logits of shape (B, classes)")
            if any(o is None for o in outputs):
                raise RuntimeError("a target layer was not called in the model's forward pass")
            predicted = logits.argmax(1)
            target = predicted if target is None else torch.where(target.to(logits.device) < 0, predicted,
                                                                  target.to(logits.device).long())
            size = tuple(images.shape[-2:])
            activations = [_to_maps(model, o.detach(), reshape_transform, size).float() for o in outputs]
            for i, alpha in enumerate(alphas):
                objective, compared = finer_objective(logits, target, alpha, n_compare)
                grads = torch.autograd.grad(objective.sum(), outputs, retain_graph=i < len(alphas) - 1)
                raw = [combine(a, _to_maps(model, g, reshape_transform, size).float()).clamp(min=0)
                       for a, g in zip(activations, grads)]
                passes.append(CamPass(raw, logits.detach().float(), target, compared))
    finally:
        for handle in handles:
            handle.remove()
    return passes


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling of (B, h, w) maps, as pytorch-grad-cam does (eps 1e-7)."""
    low = maps.amin((1, 2), keepdim=True)
    shifted = maps - low
    return shifted / (1e-7 + shifted.amax((1, 2), keepdim=True))


def combine_layers(raw: list[torch.Tensor], size: tuple[int, int], normalize: bool) -> torch.Tensor:
    """Per-layer maps -> one map per image.

    Parameters
    ----------
    raw : list of torch.Tensor, each (B, h_l, w_l)
    size : (H, W)
        Output size when ``normalize``; otherwise the first layer's size is used.
    normalize : bool
        True: min-max each layer, resize bilinearly to ``size``, average, min-max
        again (pytorch-grad-cam's post-processing). False: resize to the first
        layer's resolution and average, keeping raw values.

    Returns
    -------
    torch.Tensor, float32, shape (B, H, W) or (B, h_0, w_0)
    """
    if not normalize:
        size = tuple(raw[0].shape[1:])
    resized = []
    for maps in raw:
        maps = minmax(maps) if normalize else maps
        if tuple(maps.shape[1:]) != tuple(size):
            maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        resized.append(maps)
    mean = torch.stack(resized).mean(0)
    return minmax(mean.clamp(min=0)) if normalize else mean


def compute_cams(model: nn.Module, images: torch.Tensor, target_layers: Sequence[nn.Module | str], *,
                 method: str = "gradcam", alpha: float | None = None, target: torch.Tensor | None = None,
                 reshape_transform: Callable | None = None, normalize: bool = True,
                 n_compare: int = 3) -> torch.Tensor:
    """Class activation maps for a batch of images.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier in eval mode returning logits (B, K); a timm CNN or ViT.
    images : torch.Tensor, float, shape (B, 3, H, W)
        Normalised as the model expects, on the model's device.
    target_layers : sequence of nn.Module or str
        Layers (or their names in ``model.named_modules()``) whose outputs are
        explained, e.g. ``["layer4"]`` or ``["blocks.11.norm1"]``.
    method : str
        A key of :data:`METHODS` (the registry: gradcam, gradcampp, xgradcam, hirescam, layercam).
    alpha : float or None
        None: the base method. A float: Finer-CAM with that comparison strength
        (0 = whole object, like the base method; higher = finer discriminative detail).
    target : torch.Tensor of int64, shape (B,), or None
        Class to explain per image (the Finer-CAM authors explain the true class); -1 entries and
        None = the predicted class.
    reshape_transform : callable or None
        Layer output -> (B, C, h, w). None handles CNN maps and timm ViT tokens
        (class and register tokens dropped) automatically.
    normalize : bool
        True: maps in [0, 1] at input size, as pytorch-grad-cam gives them.
        False: raw maps (after ReLU) at the first layer's resolution.
    n_compare : int
        Finer-CAM's number of compared classes (clamped for models with few classes).

    Returns
    -------
    torch.Tensor, float32, shape (B, H, W) or (B, h, w)
    """
    result, = cam_pass(model, images, target_layers, method=method, alphas=(alpha,), target=target,
                       reshape_transform=reshape_transform, n_compare=n_compare)
    return combine_layers(result.raw, tuple(images.shape[2:]), normalize)
