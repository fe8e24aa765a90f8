"""Checks of a run that need more than the config's schema, made when the workflow is parsed: before any job,
so that a run never stops after minutes of work on something knowable at the start.

Each check returns a list of problems (strings naming the config key, what is wrong and what to do); empty
when all is well. :func:`preflight` runs them all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from traitpipe.config import collection_file

#: How a torch checkpoint file starts: a zip archive (torch.save since 1.6) or a legacy pickle (protocol 2+).
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def check_phylogeny(config: dict, species: Sequence[str]) -> list[str]:
    """The phylogeny the config names exists, is a Newick tree, and has a tip for every species.

    Examples
    --------
    >>> check_phylogeny({"collection": {"root": ".", "phylogeny": None}}, ["A a"])
    []
    """
    path = collection_file(config, "phylogeny")
    if path is None:
        return []
    if not path.is_file():
        return [f"collection.phylogeny: file not found: {path}"]
    from traitpipe.phylo.levels import read_tree

    try:
        tips = {leaf.taxon.label for leaf in read_tree(path.read_text()).leaf_node_iter() if leaf.taxon is not None}
    except Exception as error:  # dendropy raises its own errors for every kind of bad Newick
        return [f"collection.phylogeny: {path} is not a Newick tree: {str(error).splitlines()[0]}"]
    missing = sorted(set(species) - tips)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        return [f"collection.phylogeny: {len(missing)} species of the manifest have no tip in {path}: {shown} "
                "(tip names must equal the species column, underscores and spaces as written)"]
    return []


def _checkpoint_files(config: dict) -> list[tuple[str, str]]:
    """(config key, value) of every checkpoint the config names as a local file."""
    from traitpipe.models.sources import source_kind

    found = []
    for section in ("classifier", "prompt_cam", "intr", "phylo"):
        value = config[section]["checkpoint"]
        if config[section].get("enabled", True) and source_kind(value) == "file":
            found.append((f"{section}.checkpoint", value))
    value = config["segment"]["checkpoint"]
    if config["segment"]["enabled"] and value not in (None, "train"):
        if Path(value).is_file():  # a file: no need to import SAM 2 (and torch) for its released names
            found.append(("segment.checkpoint", value))
        else:
            from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

            if value not in HF_MODEL_ID_TO_FILENAMES:
                found.append(("segment.checkpoint", value))
    return found


def check_checkpoints(config: dict) -> list[str]:
    """Every checkpoint named as a local file exists, can be read and starts as a torch checkpoint does.

    Only the first bytes are read here (a checkpoint may be gigabytes); loading it, with ``weights_only=True``,
    is the job's. A value that is neither a file nor a named source is reported with the sources there are.
    """
    problems = []
    for key, value in _checkpoint_files(config):
        path = Path(value)
        if not path.is_file():
            sources = ("a released SAM 2 name (facebook/sam2.1-hiera-tiny, ...) or train" if key.startswith("segment")
                       else "timm or hf-hub:<org>/<repo>")
            problems.append(f"{key}: no such file {value} (a checkpoint is a local file, {sources}, or null)")
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as error:
            problems.append(f"{key}: cannot read {value}: {error.strerror}")
            continue
        if not head.startswith(CHECKPOINT_MAGIC):
            problems.append(f"{key}: {value} is not a torch checkpoint (it starts with neither a zip nor a pickle "
                            "header): empty, truncated at the start, or another kind of file")
    return problems


def check_layers(config: dict, n_classes: int) -> list[str]:
    """The explanation layers the config names exist in the classifier's architecture.

    The model is built on PyTorch's ``meta`` device: its structure without memory or weights, in a moment.
    A classifier whose source names its own architecture (``hf-hub``, a folder) is checked when it is loaded.
    """
    from traitpipe.models.sources import OWN_ARCHITECTURE, source_kind

    settings = config["classifier"]
    named = [(m["name"], m["layers"]) for m in config["explain"]["methods"] if m["layers"]]
    if not (config["explain"]["enabled"] and named) or source_kind(settings["checkpoint"]) in OWN_ARCHITECTURE:
        return []
    import timm
    import torch

    if not timm.is_model(settings["arch"].split(".")[0]):
        return [f"classifier.arch: unknown timm architecture {settings['arch']!r}"]
    with torch.device("meta"):
        model = timm.create_model(settings["arch"], pretrained=False, num_classes=n_classes, **settings["kwargs"])
    from traitpipe.explain.cam import resolve_layers

    problems = []
    for method, layers in named:
        try:
            resolve_layers(model, layers)
        except KeyError as error:
            problems.append(f"explain.methods ({method}).layers: {settings['arch']}: {error.args[0]}")
    return problems


def check_intr(config: dict) -> list[str]:
    """INTR's backbone is a timm CNN ending at stride 32, its heads divide ``d_model`` and ``d_model`` is a
    multiple of 4 (built on the ``meta`` device: no memory, no weights)."""
    settings = config["intr"]
    if not settings["enabled"]:
        return []
    import timm
    import torch

    if settings["d_model"] % settings["nheads"]:
        return [f"intr.nheads: {settings['nheads']} heads do not divide intr.d_model {settings['d_model']}"]
    if settings["d_model"] % 4:
        return [f"intr.d_model: {settings['d_model']} is not a multiple of 4 (the sine encoding gives y and x "
                "half of it each, in sine-cosine pairs)"]
    if not timm.is_model(settings["backbone"].split(".")[0]):
        return [f"intr.backbone: unknown timm architecture {settings['backbone']!r}"]
    from traitpipe.explain.intr import INTR

    try:
        with torch.device("meta"):
            INTR(2, backbone=settings["backbone"], d_model=settings["d_model"], nheads=settings["nheads"],
                 enc_layers=1, dec_layers=1, dim_feedforward=1)
    except (ValueError, RuntimeError) as error:  # no stride-32 feature map, or no features at all
        return [f"intr.backbone: {error}"]
    return []


def check_clip(config: dict, species: Sequence[str]) -> list[str]:
    """CLIP's checkpoint exists, its architecture has an open_clip ViT image tower with the layers named (built on
    the ``meta`` device), and its prompt files are JSON naming every species."""
    settings = config["clip"]
    if not (settings["enabled"] and config["explain"]["enabled"]):
        return []
    problems = []
    value = settings["checkpoint"]
    named = value is not None and (value.startswith("hf-hub:") or Path(value).is_dir())  # they carry their model
    if value not in (None, "train") and not value.startswith("hf-hub:") and not Path(value).exists():
        problems.append(f"clip.checkpoint: no such file or folder {value} (a local weights file, a folder in the "
                        "Hugging Face Hub's layout, hf-hub:<org>/<repo>, train, or null)")
    elif value is not None and Path(value).is_dir():
        from traitpipe.models.clip import hub_folder_files

        try:
            hub_folder_files(value)
        except FileNotFoundError as error:
            problems.append(f"clip.checkpoint: {error}")
    if settings["model"] is not None and not named:
        problems += _check_clip_model(settings)
    root = Path(config["collection"]["root"])
    for key in ("concepts", "common_names"):
        given = settings["prompts"][key]
        if isinstance(given, str):
            path = Path(given) if Path(given).is_absolute() else root / given
            try:
                given = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                problems.append(f"clip.prompts.{key}: cannot read {path} as JSON: {error}")
                continue
        if isinstance(given, dict) and set(species) - set(given):
            missing = sorted(set(species) - set(given))
            problems.append(f"clip.prompts.{key}: no entry for {len(missing)} species: {', '.join(missing[:5])}")
    return problems


def _check_clip_model(settings: dict) -> list[str]:
    import torch

    from traitpipe.explain.cam import resolve_layers
    from traitpipe.explain.clip import PromptClassifier
    from traitpipe.models.clip import build_clip, model_config

    try:
        with torch.device("meta"):
            clip = build_clip(model_config(settings["model"]))
            model = PromptClassifier(clip.visual, torch.zeros(1, 1), 1.0)
    except (ValueError, TypeError, OSError, KeyError) as error:
        return [f"clip.model: {error}"]
    problems = []
    for method in settings["methods"]:
        try:
            resolve_layers(model, method["layers"] or [])
        except KeyError as error:
            problems.append(f"clip.methods ({method['name']}).layers: {error.args[0]}")
    return problems


def preflight(config: dict, manifest: pd.DataFrame) -> list[str]:
    """Every check of this module on a validated config and its manifest (a ``species`` column)."""
    species = sorted(manifest["species"].unique())
    phylogeny = check_phylogeny(config, species) if config["phylo"]["enabled"] or config["report"]["enabled"] else []
    return (phylogeny + check_checkpoints(config) + check_layers(config, len(species)) + check_intr(config)
            + check_clip(config, species))
