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


#: Precision settings of a stage: "auto" is bfloat16 on CUDA and float32 elsewhere (SST only: the authors' setting).
PRECISIONS = ("float32", "bfloat16", "auto")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a stage runs in: "float32" or "bfloat16".

    Parameters
    ----------
    precision : str
        "float32", "bfloat16", or "auto" (bfloat16 on CUDA, float32 elsewhere: SST's authors' setting).
    device : torch.device
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return precision


def autocast(device: torch.device, precision: str = "float32"):
    """The autocast context of a stage: bfloat16 autocast where chosen (on any device), else none.

    Parameters
    ----------
    device : torch.device
    precision : str
        See :func:`resolve_precision`. Only SST's authors published bfloat16 (on CUDA);
        every other method defaults to float32 so that a cluster run gives the laptop's numbers.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 2)
    >>> with autocast(torch.device("cpu"), "bfloat16"):
    ...     layer(torch.ones(1, 2)).dtype
    torch.bfloat16
    >>> with autocast(torch.device("cpu"), "auto"):
    ...     layer(torch.ones(1, 2)).dtype
    torch.float32
    """
    if resolve_precision(precision, device) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU batch to the device, through pinned memory on CUDA (asynchronous copy)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
