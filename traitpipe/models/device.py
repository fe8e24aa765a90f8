"""Device selection and mixed precision: a cluster run is a config change, not a code change."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a config's ``device`` value.

    Parameters
    ----------
    name : str
        "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or "mps".

    Raises
    ------
    RuntimeError
        When the config asks for CUDA or MPS and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config device {name!r}: no CUDA device is available here; use 'auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"config device {name!r}: MPS is not available here; use 'auto' or 'cpu'")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (where the methods' authors used it); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU batch to the device, through pinned memory on CUDA (asynchronous copy)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
