"""Classifiers from a model source: a timm architecture plus a local checkpoint, a timm
pretrained name (downloads only because the config asked), or random weights (recorded)."""

from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from traitpipe.models.checkpoints import CheckpointError, load_state_dict, sha256_file


def build_classifier(arch: str, num_classes: int, *, kwargs: dict | None = None, checkpoint: str | Path | None = None,
                     pretrained: bool = False, new_head: bool = False) -> tuple[nn.Module, dict]:
    """Build a timm classifier in eval mode and say where its weights came from.

    Parameters
    ----------
    arch : str
        A timm model name, e.g. "vit_small_patch16_224", "resnet50", "vit_base_patch16_224.dino".
    num_classes : int
        Number of output classes.
    kwargs : dict or None
        Passed to ``timm.create_model`` (e.g. ``img_size``, ``depth``, ``embed_dim``).
    checkpoint : str, Path or None
        A local state-dict file to load (see ``load_state_dict``).
    pretrained : bool
        Let timm fetch the named pretrained weights (network; only when the config says so).
    new_head : bool
        Accept a checkpoint without (or with another size of) the classifier head,
        e.g. a backbone to fine-tune; the head stays freshly initialised.

    Returns
    -------
    model : torch.nn.Module
    info : dict
        ``arch``, ``kwargs``, ``source`` ("checkpoint", "timm-pretrained" or "random"),
        ``checkpoint``, ``sha256`` (of the checkpoint file or None), ``random_weights``.
    """
    kwargs = dict(kwargs or {})
    if not timm.is_model(arch.split(".")[0]):
        near = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm architecture {arch!r}; similar names: {', '.join(near) or '(none)'}")
    model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
    info = {"arch": arch, "kwargs": kwargs, "source": "timm-pretrained" if pretrained else "random",
            "checkpoint": None, "sha256": None, "random_weights": not pretrained}
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
        head = {f"{name}.{p}" for name, module in model.named_modules() if module is model.get_classifier()
                for p, _ in module.named_parameters()}
        if new_head:
            own = model.state_dict()
            state = {k: v for k, v in state.items() if not (k in head and own[k].shape != v.shape)}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # tensors of another shape
            raise CheckpointError(f"checkpoint {checkpoint} does not fit {arch} with {num_classes} classes: "
                                  f"{str(error).splitlines()[-1].strip()}") from None
        missing = [k for k in missing if not (new_head and k in head)]
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not fit {arch} with {num_classes} classes: "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        info.update(source="checkpoint", checkpoint=str(checkpoint), sha256=sha256_file(checkpoint),
                    random_weights=False)
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
