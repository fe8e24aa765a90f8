"""Model sources: where a classifier's weights come from, named in the config by one value.

========================  ==================================================================
config value              source
========================  ==================================================================
``null``                  ``random``: fresh weights (tests, or a model the workflow trains from
                          scratch); recorded as random in provenance and on every overlay
a file path               ``file``: a local checkpoint, a state dict in timm's layout
``timm``                  ``timm``: timm's pretrained weights for ``arch`` (its tag picks which,
                          e.g. ``vit_small_patch16_224.dino``)
``hf-hub:<org>/<repo>``   ``hf-hub``: a timm model on the Hugging Face Hub, its architecture and weights
a folder                  ``local-dir``: the same model as files in the Hub's layout on disk
                          (``config.json`` beside ``model.safetensors``), no cache, no network
========================  ==================================================================

The two named sources are fetched by timm (through the Hugging Face cache) only because the
config names them; with ``HF_HUB_OFFLINE=1`` they come from the local cache, never the network.
A new source is one function registered with ``@SOURCES.register(kind)``;
``traitpipe.models.classifier.build_classifier`` builds from any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from traitpipe.registry import Registry

if TYPE_CHECKING:  # timm and torch load with the first model built: the workflow's parse reads source_kind alone
    from torch import nn

#: kind -> builder(arch, num_classes, kwargs, value, new_head) -> (model, info: checkpoint, sha256)
SOURCES = Registry("classifier source")
#: The kinds whose model names its own architecture (``classifier.arch`` is not used).
OWN_ARCHITECTURE = {"hf-hub", "local-dir"}
#: The kinds that give pretrained weights with a head of their own, not one for the collection's species.
PRETRAINED = {"timm", "hf-hub", "local-dir"}


def source_kind(value: str | Path | None) -> str:
    """The kind of source a config value names.

    Examples
    --------
    >>> [source_kind(v) for v in (None, "timm", "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k", "models/w.pt", ".")]
    ['random', 'timm', 'hf-hub', 'file', 'local-dir']
    """
    if value is None:
        return "random"
    if str(value) == "timm":
        return "timm"
    if Path(value).is_dir():
        return "local-dir"
    return "hf-hub" if str(value).startswith("hf-hub:") else "file"


def _create(name: str, pretrained: bool, num_classes: int, kwargs: dict) -> nn.Module:
    """timm's model ``name``; timm is imported here (a 4 s import that every Snakemake start would pay for
    :func:`source_kind` in the preflight checks)."""
    import timm

    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


@SOURCES.register("random")
def _random(arch: str, num_classes: int, kwargs: dict, value, new_head: bool) -> tuple[nn.Module, dict]:
    return _create(arch, False, num_classes, kwargs), {}


@SOURCES.register("timm")
def _timm(arch: str, num_classes: int, kwargs: dict, value, new_head: bool) -> tuple[nn.Module, dict]:
    return _create(arch, True, num_classes, kwargs), {}


@SOURCES.register("hf-hub")
def _hf_hub(arch: str, num_classes: int, kwargs: dict, value, new_head: bool) -> tuple[nn.Module, dict]:
    return _create(str(value), True, num_classes, kwargs), {}


@SOURCES.register("local-dir")
def _local_dir(arch: str, num_classes: int, kwargs: dict, value, new_head: bool) -> tuple[nn.Module, dict]:
    from traitpipe.models.checkpoints import CheckpointError, sha256_file

    weights = Path(value) / "model.safetensors"
    if not (Path(value) / "config.json").is_file() or not weights.is_file():
        raise CheckpointError(f"checkpoint folder {value} needs config.json and model.safetensors (the Hugging Face "
                              "Hub's layout of a timm model)")
    return _create(f"local-dir:{value}", True, num_classes, kwargs), {"sha256": sha256_file(weights)}


@SOURCES.register("file")
def _file(arch: str, num_classes: int, kwargs: dict, value, new_head: bool) -> tuple[nn.Module, dict]:
    from traitpipe.models.checkpoints import CheckpointError, load_state_dict, sha256_file

    model = _create(arch, False, num_classes, kwargs)
    state = load_state_dict(value)
    head = {f"{name}.{p}" for name, module in model.named_modules() if module is model.get_classifier()
            for p, _ in module.named_parameters()}
    if new_head:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if not (k in head and own[k].shape != v.shape)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors of another shape
        raise CheckpointError(f"checkpoint {value} does not fit {arch} with {num_classes} classes: "
                              f"{str(error).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not (new_head and k in head)]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {value} does not fit {arch} with {num_classes} classes: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    return model, {"sha256": sha256_file(value)}
