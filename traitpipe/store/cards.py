"""Model cards: one dataclass and one JSON layout for every model a run trains or loads.

Each train job writes a card beside the weights (``models/<name>.json``); the jobs that use the model read it
back (:meth:`ModelCard.read`) for what rebuilds and feeds it, and record :meth:`ModelCard.used` in the
provenance of what they write. The layout is the same for every model: where the weights come from, their sha256, the classes in
output order, the input normalisation and size, the precision, the accuracy, the training history, what rebuilds
the architecture, and ``extra`` for what only one model has (CLIP's prompts, Phylo-NN's held-out images).

Examples
--------
>>> card = ModelCard("classifier", Source("file", checkpoint="w.pt", trained="linear probe"), sha256="ab",
...                  classes=["A a", "B b"], mean=[0.5] * 3, std=[0.5] * 3, input_size=128)
>>> card.origin()
'checkpoint w.pt, linear probe here'
>>> ModelCard.from_dict(card.to_dict()) == card
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from traitpipe.store.atomic import write_json


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from.

    Attributes
    ----------
    kind : str
        ``random`` (a random initialisation), ``timm``, ``hf-hub``, ``file`` (a checkpoint file), ``local-dir``
        (a folder in the Hub's layout) or ``trained here`` (no checkpoint: the weights are the run's own).
    checkpoint : str or None
        The config's value naming the weights (a file, ``hf-hub:<org>/<repo>``, a timm name).
    checkpoint_sha256 : str or None
        Of a local checkpoint file.
    trained : str or None
        How the run trained on top (``linear probe``, ``fine-tuned``, ``contrastively``); None when the weights
        are used as loaded.
    """

    kind: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    trained: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """What a run knows of one model (see the module docstring).

    Attributes
    ----------
    name : str
        ``classifier``, ``prompt_cam``, ``intr``, ``clip``, ``phylonn``, ``sam2``.
    source : Source
    sha256 : str or None
        Of the weights file the run wrote.
    random_weights : bool
        Whether the weights are random (never hidden: provenance and every overlay say so).
    classes : list of str
        The outputs' order (the species, or a prompt set's labels); empty for a model without classes.
    mean, std : list of 3 floats or None
        Input normalisation, in [0, 1] units.
    input_size : int or None
        Side of the square input the model reads.
    precision : str
        ``float32``, ``bfloat16`` or ``float16``: what it computes in.
    accuracy : dict
        Top-1 accuracy (``{"train": a, "val": a}``), per prompt set or per level where the model has several.
    history : list
        One record per training epoch.
    device : str
        Where it was trained or resolved.
    architecture : dict
        What rebuilds the model before its weights load (a timm name and kwargs, INTR's backbone and heads, an
        open_clip config, Phylo-NN's sizes).
    extra : dict
        What only this model has.
    """

    name: str
    source: Source
    sha256: str | None = None
    random_weights: bool = False
    classes: list[str] = field(default_factory=list)
    mean: list[float] | None = None
    std: list[float] | None = None
    input_size: int | None = None
    precision: str = "float32"
    accuracy: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    device: str = "cpu"
    architecture: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def origin(self) -> str:
        """Where the weights come from, for a reader (the report's models table)."""
        source = self.source
        if self.random_weights:
            return "random weights"
        if source.kind == "trained here":
            return "trained here" + (f" ({source.trained})" if source.trained else "")
        loaded = {"random": "random initialisation", "timm": "timm's pretrained weights",
                  "hf-hub": str(source.checkpoint)}.get(source.kind, f"checkpoint {source.checkpoint}")
        return loaded + (f", {source.trained} here" if source.trained else "")

    def used(self) -> dict:
        """The model as the outputs made with it record it (``provenance.models.<name>``)."""
        return {**asdict(self.source), "sha256": self.sha256, "random_weights": self.random_weights,
                "origin": self.origin()}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict) -> ModelCard:
        """A card from its JSON layout; a ValueError names keys that are not the card's."""
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"not a traitpipe model card: unknown keys {', '.join(sorted(unknown))}")
        return cls(**{**value, "source": Source(**value["source"])})

    def write(self, path: str | Path) -> Path:
        """Write the card as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """The card a train job wrote."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
