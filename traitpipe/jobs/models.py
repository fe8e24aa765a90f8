"""Model files the workflow writes under ``results/models/`` and reads back."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from traitpipe.models.classifier import build_classifier


def model_files(config: dict, name: str) -> tuple[Path, Path]:
    """(weights, description) of a model the workflow trained or resolved: ``models/<name>.pt``, ``.json``."""
    folder = Path(config["results"]) / "models"
    return folder / f"{name}.pt", folder / f"{name}.json"


def load_classifier(config: dict, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The run's classifier (from ``models/classifier.pt``) on ``device``, in eval mode, and its description."""
    weights, description = model_files(config, "classifier")
    meta = json.loads(description.read_text())
    model, _ = build_classifier(meta["arch"], len(meta["classes"]), kwargs=meta["kwargs"], checkpoint=weights)
    return model.to(device).eval(), meta
