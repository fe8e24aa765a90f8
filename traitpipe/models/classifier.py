"""Classifiers: a timm architecture built from a model source (``traitpipe.models.sources``), the
normalisation it expects, and the class count of a checkpoint's head."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from traitpipe.models.checkpoints import CheckpointError, load_state_dict
from traitpipe.models.sources import OWN_ARCHITECTURE, SOURCES, source_kind


def normalisation(model: nn.Module) -> tuple[list[float], list[float]]:
    """The (mean, std) per RGB channel a timm model was trained with, from its ``pretrained_cfg``.

    Examples
    --------
    >>> normalisation(timm.create_model("resnet18", pretrained=False))[0]
    [0.485, 0.456, 0.406]
    """
    config = timm.data.resolve_model_data_config(model)
    return [float(v) for v in config["mean"]], [float(v) for v in config["std"]]


#: How a classifier pools its backbone's tokens: ``token`` (a ViT's class token, timm's default head) or
#: ``mean_patch`` (the mean of the normalised patch tokens, as the Finer-CAM authors' linear probe on DINOv2's
#: ``x_norm_patchtokens.mean(dim=1)`` and open_clip's ``pool_type = 'avg'``).
POOLS = ("token", "mean_patch")


def pool_kwargs(arch: str | None, pool: str | None, *, linear_probe: bool = False, kwargs: dict | None = None) -> dict:
    """The ``timm.create_model`` keyword arguments that give a classifier its pooling.

    Parameters
    ----------
    arch : str or None
        A timm architecture; None for a source that names its own (a Hub model), taken to be a ViT.
    pool : {"token", "mean_patch"} or None
        None: ``mean_patch`` for a linear probe, else the architecture's own head.
    linear_probe : bool
    kwargs : dict or None
        The config's other keyword arguments (a ViT's depth, say), to build the architecture with.

    Returns
    -------
    dict
        For a ViT, ``global_pool`` ("token" or "avg") and, for ``mean_patch``, ``fc_norm=False`` (each token is
        normalised, then averaged); for a CNN, whose head already averages its last feature map, none.

    Examples
    --------
    >>> pool_kwargs("vit_tiny_patch16_224", "mean_patch")
    {'global_pool': 'avg', 'fc_norm': False}
    >>> pool_kwargs("vit_tiny_patch16_224", None), pool_kwargs("vit_tiny_patch16_224", None, linear_probe=True)
    ({}, {'global_pool': 'avg', 'fc_norm': False})
    >>> pool_kwargs("resnet18", "mean_patch")
    {}
    """
    pool = pool or ("mean_patch" if linear_probe else None)
    if pool is None:
        return {}
    if pool not in POOLS:
        raise ValueError(f"classifier.pool must be one of {POOLS}, got {pool!r}")
    if arch is not None:
        import torch

        with torch.device("meta"):
            model = timm.create_model(arch, num_classes=2, **dict(kwargs or {}))
        if not hasattr(model, "num_prefix_tokens"):  # a CNN
            if pool == "token":
                raise ValueError(f"classifier.pool: token needs a class token, and {arch} has none; use mean_patch")
            return {}
    return {"global_pool": "token"} if pool == "token" else {"global_pool": "avg", "fc_norm": False}


def build_classifier(arch: str, num_classes: int, *, kwargs: dict | None = None, source: str | Path | None = None,
                     new_head: bool = False) -> tuple[nn.Module, dict]:
    """Build a timm classifier from a source, in eval mode, and say where its weights came from.

    Parameters
    ----------
    arch : str
        A timm model name, e.g. "vit_small_patch16_224", "resnet50", "vit_base_patch16_224.dino"
        (ignored by an ``hf-hub`` source, which names its own).
    num_classes : int
        Number of output classes.
    kwargs : dict or None
        Passed to ``timm.create_model`` (e.g. ``img_size``, ``depth``, ``embed_dim``).
    source : str, Path or None
        See the module docstring: None, a local file, "timm" or "hf-hub:<org>/<repo>".
    new_head : bool
        Accept weights without (or with another size of) the classifier head, e.g. a backbone to
        fine-tune; the head stays freshly initialised.

    Returns
    -------
    model : torch.nn.Module
    info : dict
        ``arch``, ``kwargs``, ``source`` (the kind), ``checkpoint`` (the config value or None),
        ``sha256`` (of a local file, else None), ``random_weights``, and the model's ``mean`` and
        ``std`` (lists of 3 floats).
    """
    kwargs, kind = dict(kwargs or {}), source_kind(source)
    if kind not in OWN_ARCHITECTURE and not timm.is_model(arch.split(".")[0]):
        near = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm architecture {arch!r}; similar names: {', '.join(near) or '(none)'}")
    model, found = SOURCES[kind](arch, num_classes, kwargs, source, new_head)
    mean, std = normalisation(model)
    info = {"arch": arch, "kwargs": kwargs, "source": kind, "checkpoint": None if source is None else str(source),
            "sha256": None, "random_weights": kind == "random", "mean": mean, "std": std, **found}
    return model.eval(), info


def head_outputs(arch: str, checkpoint: str | Path, *, kwargs: dict | None = None) -> int:
    """Number of classes of a checkpoint's classifier head, for a timm architecture.

    The architecture is built on the meta device (no memory, no weights) only to name its head.

    Raises
    ------
    CheckpointError
        When the checkpoint holds no weights for the architecture's head.
    """
    import torch

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=2, **dict(kwargs or {}))
    head = model.get_classifier()
    name = next(n for n, m in model.named_modules() if m is head)
    state = load_state_dict(checkpoint)
    key = f"{name}.weight" if name else "weight"
    if key not in state:
        raise CheckpointError(f"checkpoint {checkpoint} has no classifier head {key!r} for {arch}")
    return int(state[key].shape[0])
