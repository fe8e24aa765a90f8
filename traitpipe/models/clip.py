"""CLIP-like models (open_clip, BioCLIP) from their files or a named source: the architecture, the weights, the
tokenizer.

A model comes from a local checkpoint (open_clip's layout: a state dict, or a folder with ``open_clip_config.json``
and its weights, as on the Hugging Face Hub), or from a named source the config gives (``hf-hub:imageomics/bioclip``),
fetched by open_clip only because the config names it. :mod:`traitpipe.explain.clip` makes a classifier over text
prompts of it.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import open_clip
from open_clip.model import _build_vision_tower
from torch import nn


#: Named sources open_clip resolves itself (the only ones that may reach a network, and only when named).
NAMED = ("hf-hub:",)


def model_config(model: str | dict) -> dict:
    """An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...).

    Parameters
    ----------
    model : str or dict
        An architecture open_clip ships (``"ViT-B-16"``, the BioCLIP architecture), a
        JSON file in its model-config layout, or the config itself.

    Examples
    --------
    >>> model_config("ViT-B-16")["vision_cfg"]["patch_size"]
    16
    """
    if isinstance(model, dict):
        return model
    if Path(model).is_file():  # open_clip's model-config layout, or the Hub's open_clip_config.json
        config = json.loads(Path(model).read_text())
        return config.get("model_cfg", config)
    config = open_clip.get_model_config(model)
    if config is None:
        near = difflib.get_close_matches(model, open_clip.list_models(), n=5, cutoff=0.5)
        raise ValueError(f"open_clip has no architecture {model!r}; nearest: {', '.join(near) or '(none)'}")
    return config


def with_pool(config: dict, pool: str | None) -> dict:
    """An open_clip model config with its image tower's pooling (``vision_cfg.pool_type``) set.

    Parameters
    ----------
    config : dict
        An open_clip model config.
    pool : {"tok", "avg"} or None
        ``tok``: the class token; ``avg``: the mean of the patch tokens after the final norm (the Finer-CAM
        authors' ``model.visual.pool_type = 'avg'``); None: the config's own.

    Examples
    --------
    >>> with_pool(TINY, "avg")["vision_cfg"]["pool_type"], "pool_type" in TINY["vision_cfg"]
    ('avg', False)
    """
    if pool is None:
        return config
    return {**config, "vision_cfg": {**config["vision_cfg"], "pool_type": pool}}


def build_clip(config: dict) -> nn.Module:
    """A fresh (random) open_clip model from its config, in eval mode."""
    config = dict(config)
    custom = config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {})
    kind = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    return kind(**config).eval()


def clip_tokenizer(config: dict, name: str | None = None):
    """The model's tokenizer: open_clip's for a named model, else its BPE tokenizer at the config's context length
    (BioCLIP's and OpenAI CLIP's; it ships with open_clip, no download)."""
    if name is not None:
        return open_clip.get_tokenizer(name)
    text = config.get("text_cfg", {})
    if "hf_tokenizer_name" in text:
        return open_clip.get_tokenizer("", hf_tokenizer_name=text["hf_tokenizer_name"])
    return open_clip.SimpleTokenizer(context_length=text.get("context_length", 77))


def load_clip(checkpoint: str | None, model: str | dict | None) -> tuple[nn.Module, dict, object]:
    """An open_clip model, its config and tokenizer, from the config's ``clip.checkpoint`` and ``clip.model``.

    Parameters
    ----------
    checkpoint : str or None
        ``hf-hub:<org>/<repo>`` (fetched because named; e.g. ``hf-hub:imageomics/bioclip``), a local
        folder in the Hub's layout (``open_clip_config.json`` beside ``open_clip_pytorch_model.bin``
        or ``.safetensors``), a local weights file (open_clip's state dict, with or without its
        training ``state_dict`` / ``module.`` wrapping) of the ``model`` architecture, or None (random
        weights; recorded as such).
    model : str, dict or None
        The architecture (see :func:`model_config`); needed with a weights file or None.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on the CPU.
    config : dict
        Its open_clip model config (the image tower is rebuilt from it).
    tokenizer : callable
        list of str -> int64 tensor (P, context_length).
    """
    if checkpoint is not None and (checkpoint.startswith(NAMED) or Path(checkpoint).is_dir()):
        if not checkpoint.startswith(NAMED):
            hub_folder_files(checkpoint)  # open_clip would build a random model from a folder without weights
        name = checkpoint if checkpoint.startswith(NAMED) else f"local-dir:{checkpoint}"
        clip = open_clip.create_model(name).eval()
        config = open_clip.get_model_config(name)
        return clip, config, clip_tokenizer(config, name)
    if model is None:
        raise ValueError("clip.model must name the architecture of a weights file (or a random model)")
    config = model_config(model)
    clip = build_clip(config)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"clip.checkpoint {checkpoint!r} is no file, folder or hf-hub: source")
        open_clip.load_checkpoint(clip, checkpoint)
    named = isinstance(model, str) and not Path(model).is_file()  # an architecture open_clip ships
    return clip, config, clip_tokenizer(config, model if named else None)


def hub_folder_files(folder: str | Path) -> list[Path]:
    """The files of a checkpoint folder in the Hugging Face Hub's layout: ``open_clip_config.json`` and the weights
    (``*.safetensors``, ``*.bin`` or ``*.pth``, as open_clip looks for them).

    Raises
    ------
    FileNotFoundError
        When either is missing (open_clip itself would only warn, and build a model with random weights).
    """
    folder = Path(folder)
    config = folder / "open_clip_config.json"
    weights = sorted(p for suffix in ("safetensors", "bin", "pth") for p in folder.glob(f"*.{suffix}"))
    if not config.is_file() or not weights:
        raise FileNotFoundError(f"checkpoint folder {folder} needs open_clip_config.json and a weights file "
                                "(open_clip_pytorch_model.bin or .safetensors), as the Hub holds them")
    return [config, *weights]


def image_tower(config: dict) -> nn.Module:
    """A fresh image tower of an open_clip model config (the per-shard jobs load its weights)."""
    return _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=config.get("quick_gelu", False))


#: A tiny CLIP for tests and docs: 32 px images in 4 x 4 patches of 8, two blocks per tower.
TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
