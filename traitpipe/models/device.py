"""Mixed precision, moving tensors and seeding: a cluster run is a config change, not a code change. Which
device a job takes is :mod:`traitpipe.jobs.devices`."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

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


def seed_everything(seed: int) -> None:
    """Seed every random generator a job draws from and ask PyTorch for deterministic kernels.

    Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device) get ``seed``;
    cuDNN stops benchmarking and picks deterministic algorithms; cuBLAS gets the workspace setting its
    deterministic mode needs. Where PyTorch has no deterministic kernel for an operation it warns
    rather than fails (``warn_only``). Two runs of one config then give the same tables and maps.

    Parameters
    ----------
    seed : int

    Examples
    --------
    >>> seed_everything(3); a = torch.rand(2)
    >>> seed_everything(3); torch.equal(a, torch.rand(2))
    True
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
