"""Checkpoint files: state dicts only (``weights_only=True``), identified by sha256."""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what is expected."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None, key: str) -> None:
    """Raise :class:`CheckpointError` when ``expected`` is given and the file's sha256 differs (``key``: the
    config key that named it, for the message)."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise CheckpointError(f"checkpoint {path} has sha256 {actual}, not the {expected} that {key}_sha256 names: "
                              "it changed since, or is another file. Nothing was loaded from it")


def refusal(path: str | Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words that never suggest unsafe loading: a pickled
    Python object (named) rather than tensors, or a file that is not a readable torch checkpoint.

    Examples
    --------
    >>> refusal("m.pt", pickle.UnpicklingError("Weights only load failed. Re-running with weights_only set to "
    ...         "False will likely succeed. WeightsUnpickler error: Unsupported global: GLOBAL a.Net was not ..."))
    'checkpoint m.pt is not a plain state dict: it holds a pickled Python object (a.Net), which traitpipe never unpickles (it loads tensors only). Save model.state_dict(), not the model object.'
    """
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found:
        return (f"checkpoint {path} is not a plain state dict: it holds a pickled Python object ({found[1]}), which "
                "traitpipe never unpickles (it loads tensors only). Save model.state_dict(), not the model object.")
    return (f"checkpoint {path} is corrupt, truncated or not a torch checkpoint ({type(error).__name__} while reading "
            "it): copy or download it again, and compare its sha256 with the source's")


def load_checkpoint(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU, with an ``argparse.Namespace`` of plain values
    allowed (the ``args`` entry of DETR and INTR training checkpoints); :class:`CheckpointError` (with
    :func:`refusal`'s reason) for anything else it refuses or cannot read."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(refusal(path, error)) from None


def load_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict from a local checkpoint file, safely.

    Parameters
    ----------
    path : str or Path
        A ``.pt`` / ``.pth`` / ``.bin`` file written by ``torch.save``.
    key : str or None
        Take ``checkpoint[key]`` (e.g. "model" or "state_dict" in training
        checkpoints). None: the file itself, or its "state_dict", "model" or
        "model_state_dict" entry (the Prompt-CAM authors' layout) when it is a
        training checkpoint that holds one.

    Returns
    -------
    dict of str to torch.Tensor

    Raises
    ------
    CheckpointError
        Missing file; a pickled object that ``weights_only=True`` refuses (a whole
        model object, say); or content that is not a mapping of names to tensors.
        (:func:`load_checkpoint`: an ``argparse.Namespace`` beside the weights is allowed.)
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    content = load_checkpoint(path)
    if key is None and isinstance(content, dict):
        key = next((k for k in ("state_dict", "model", "model_state_dict") if isinstance(content.get(k), dict)), None)
    if key is not None:
        if not isinstance(content, dict) or key not in content:
            raise CheckpointError(f"checkpoint {path} has no entry {key!r}")
        content = content[key]
    if not isinstance(content, dict) or not content or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        raise CheckpointError(f"checkpoint {path} is not a state dict (a mapping of parameter names to tensors)")
    return content
