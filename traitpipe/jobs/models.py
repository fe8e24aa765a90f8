"""One ``load_*`` per model kind: the models the workflow trains or resolves, from the files its rules hand over
(a weights file and its JSON description). The segmentation model is a backend of ``traitpipe.segment.backends``."""

from __future__ import annotations

from pathlib import Path

import torch

from traitpipe.models.checkpoints import load_state_dict
from traitpipe.store.cards import ModelCard


def class_order(setting, checkpoint: str, species, n_outputs: int, config: dict, what: str):
    """The output order of an external checkpoint's classes, checked against the collection's species.

    ``setting`` is the config's class list (``classifier.classes`` / ``prompt_cam.classes``: a list,
    a file under the collection root, or null); null falls back on the list the checkpoint carries.
    Returns ``(classes, warning)``; a warning (no class list anywhere, the sorted species assumed)
    is also printed to the job's log. Raises ValueError when the classes and species differ.
    """
    import sys

    from traitpipe.models.classes import carried_classes, match_classes, read_class_list

    given = read_class_list(setting, config["collection"]["root"])
    if given is None:
        given = carried_classes(checkpoint)
    classes, warning = match_classes(given, species, n_outputs, f"{what} checkpoint {checkpoint}")
    if warning:
        print(f"{what}: WARNING {warning}", file=sys.stderr)
    return classes, warning


def load_classifier(weights: str | Path, description: str | Path,
                    device: torch.device) -> tuple[torch.nn.Module, ModelCard]:
    """The run's classifier (``models/classifier.pt`` and its card) on ``device``, in eval mode, and its card."""
    from traitpipe.models.classifier import build_classifier  # timm: 1.5 s of import the other steps skip

    card = ModelCard.read(description)
    model, _ = build_classifier(card.architecture["arch"], len(card.classes), kwargs=card.architecture["kwargs"],
                                source=weights)
    return model.to(device).eval(), card


def load_prompt_cam(classifier_weights: str | Path, classifier_description: str | Path, weights: str | Path | None = None,
                    *, drop_path: float = 0.0, prompt_dropout: float = 0.0):
    """A PromptCAM on the run's classifier backbone (frozen), and the classifier's card.

    ``weights``: Prompt-CAM weights in the authors' layout (backbone, ``vpt.prompt_embeddings``, ``head.*``)
    to load (the workflow's ``models/prompt_cam.pt`` or a released checkpoint); None: fresh prompts and head.
    """
    from traitpipe.explain.prompt_cam import PromptCAM, load_released
    from traitpipe.models.classifier import build_classifier

    card = ModelCard.read(classifier_description)
    backbone, _ = build_classifier(card.architecture["arch"], len(card.classes),
                                   kwargs={**card.architecture["kwargs"], "drop_path_rate": drop_path},
                                   source=classifier_weights)
    model = PromptCAM(backbone, len(card.classes), prompt_dropout=prompt_dropout)
    if weights is not None:
        load_released(model, load_state_dict(weights))
    return model, card


def build_phylonn(settings: dict, groups: list[int], level_names: list[str]):
    """The Phylo-NN base VQGAN and disentangler of the ``phylo`` config section, for ``groups`` per level."""
    from traitpipe.phylo.model import Disentangler
    from traitpipe.phylo.vqgan import VQGAN

    sizes = settings["model"]
    base = VQGAN(ch=sizes["ch"], ch_mult=sizes["ch_mult"], num_res_blocks=sizes["num_res_blocks"],
                 attn_resolutions=sizes["attn_resolutions"], resolution=settings["image_size"],
                 z_channels=sizes["z_channels"], embed_dim=sizes["embed_dim"], n_embed=sizes["n_embed"],
                 groups=sizes["norm_groups"])
    model = Disentangler(sizes["z_channels"], base.feature_size, groups, level_names,
                         hidden=sizes["hidden"], phylo_channels=sizes["phylo_channels"], code_dim=sizes["code_dim"],
                         codes_per_level=sizes["codes_per_level"], n_codes=sizes["n_codes"],
                         nonphylo_levels=sizes["nonphylo_levels"])
    return base, model


def load_phylonn(weights: str | Path, description: str | Path, settings: dict, device: torch.device):
    """The run's Phylo-NN (base VQGAN and disentangler, eval mode, on ``device``) and its card."""
    card = ModelCard.read(description)
    base, model = build_phylonn(settings, card.extra["groups"], card.extra["level_names"])
    base.load_state_dict(load_state_dict(weights, key="base"))
    model.load_state_dict(load_state_dict(weights, key="disentangler"))
    return base.to(device).eval(), model.to(device).eval(), card


def load_intr_model(weights: str | Path, description: str | Path):
    """The run's INTR (``models/intr.pt``, this module's layout) sized and named as its card says, in eval mode,
    and the card."""
    from traitpipe.explain.intr import load_intr

    card = ModelCard.read(description)
    model = load_intr(load_state_dict(weights), backbone=card.architecture["backbone"],
                      nheads=card.architecture["nheads"])
    return model.eval(), card


def load_prompt_classifier(weights: str | Path, description: str | Path, prompts: str, device: torch.device):
    """The run's CLIP image tower scored against one prompt set (``models/clip.pt``, written by the clip_model job),
    on ``device`` in eval mode, its card, and that set's ``texts``, ``labels`` and ``species_prompt`` (a dict)."""
    from traitpipe.explain.clip import PromptClassifier
    from traitpipe.models.clip import image_tower
    from traitpipe.models.checkpoints import load_checkpoint

    card = ModelCard.read(description)
    stored = load_checkpoint(weights)
    if prompts not in stored["prompts"]:
        raise KeyError(f"{weights} has no prompt set {prompts!r}; it has {', '.join(stored['prompts'])}")
    visual = image_tower(stored["config"])
    visual.load_state_dict(stored["visual"])
    chosen = stored["prompts"][prompts]
    model = PromptClassifier(visual, chosen["embeddings"], stored["logit_scale"])
    return model.to(device).eval(), card, {k: chosen[k] for k in ("texts", "labels", "species_prompt")}
