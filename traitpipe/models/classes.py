"""Class order of a model: which output is which species.

A model trained here has the collection's species in sorted order. An external
checkpoint (a released Prompt-CAM model, a classifier trained elsewhere) has the
order it was trained with: it carries its class list (a ``"classes"`` entry beside its
state dict), or the config gives one (``classifier.classes`` / ``prompt_cam.classes``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from traitpipe.models.checkpoints import load_checkpoint


def read_class_list(value: str | Sequence[str] | None, root: str | Path = ".") -> list[str] | None:
    """A class list from the config: a list, a file (JSON list, or one name per line) under ``root``, or None.

    Raises
    ------
    FileNotFoundError
        A named file that does not exist.
    ValueError
        A file or list that is not a list of distinct names.
    """
    if value is None:
        return None
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else Path(root) / value
        if not path.is_file():
            raise FileNotFoundError(f"class list file {path} not found")
        text = path.read_text(encoding="utf-8")
        value = json.loads(text) if path.suffix == ".json" else [line.strip() for line in text.splitlines()
                                                                  if line.strip()]
    names = [str(v) for v in value]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class list names {repeated} more than once")
    return names


def carried_classes(path: str | Path) -> list[str] | None:
    """The ``"classes"`` list a checkpoint file carries beside its state dict, or None."""
    content = load_checkpoint(path)
    classes = content.get("classes") if isinstance(content, dict) else None
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def match_classes(given: Sequence[str] | None, species: Sequence[str], n_outputs: int,
                  source: str) -> tuple[list[str], str | None]:
    """The class order of a checkpoint's outputs, checked against the collection's species.

    Parameters
    ----------
    given : sequence of str or None
        The checkpoint's classes in output order (carried or from the config), or None.
    species : sequence of str
        The collection's species.
    n_outputs : int
        The checkpoint's number of classes.
    source : str
        What the checkpoint is, for messages.

    Returns
    -------
    classes : list of str
        Output i is ``classes[i]``.
    warning : str or None
        Set when no class list was given and the sorted species are assumed.

    Raises
    ------
    ValueError
        The class list and the species differ (the message names what each lacks), or the
        list's length is not the checkpoint's number of outputs, or (with no list) the
        number of outputs is not the number of species.

    Examples
    --------
    >>> match_classes(["b", "a"], ["a", "b"], 2, "ckpt.pt")
    (['b', 'a'], None)
    >>> match_classes(None, ["b", "a"], 2, "ckpt.pt")[1]
    "ckpt.pt has no class list: assuming its 2 outputs are the sorted species ['a', 'b']"
    """
    species = sorted(set(species))
    if given is None:
        if n_outputs != len(species):
            raise ValueError(f"{source} has {n_outputs} classes and no class list; the collection has "
                             f"{len(species)} species: give the checkpoint's class list in the config")
        return species, (f"{source} has no class list: assuming its {n_outputs} outputs are the sorted species "
                         f"{species[:5]}{' ...' if len(species) > 5 else ''}")
    given = list(given)
    if len(given) != n_outputs:
        raise ValueError(f"{source}: its class list names {len(given)} classes but it has {n_outputs} outputs")
    only_model, only_collection = sorted(set(given) - set(species)), sorted(set(species) - set(given))
    if only_model or only_collection:
        raise ValueError(f"{source}: its classes do not match the collection's species: "
                         f"in the checkpoint only {only_model[:10]}, in the collection only {only_collection[:10]}")
    return given, None


def explained_classes(species: pd.Series, classes: list[str] | dict[str, int], target: str) -> np.ndarray:
    """The class each image's map explains (``explain.target``), -1 where it is the model's prediction.

    ``classes``: the model's class names in output order, or species -> class index (a CLIP prompt set's
    ``species_prompt``). ``target`` "true": the class of the image's own species where the model has it
    (-1 elsewhere); "predicted": -1 for every image.

    Examples
    --------
    >>> explained_classes(pd.Series(["b", "z", "a"]), ["a", "b"], "true").tolist()
    [1, -1, 0]
    >>> explained_classes(pd.Series(["b", "z", "a"]), ["a", "b"], "predicted").tolist()
    [-1, -1, -1]
    >>> explained_classes(pd.Series(["b", "z", "a"]), {"a": 0, "b": 0}, "true").tolist()
    [0, -1, 0]
    """
    if target == "predicted":
        return np.full(len(species), -1, np.int64)
    order = classes if isinstance(classes, dict) else {name: i for i, name in enumerate(classes)}
    return species.map(order).fillna(-1).to_numpy(np.int64, copy=True)  # writable (pandas copy-on-write)
