"""Device selection and mixed precision: a cluster run is a config change, not a code change."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: Lock files of the GPUs this process claimed: open for the process's life, so the claim lasts as long.
_CLAIMS: dict[int, object] = {}


def claim_gpu(count: int, lock_dir: str | Path | None = None, poll_s: float = 5.0) -> int:
    """Claim one of this machine's ``count`` visible CUDA devices for the rest of this process.

    Several jobs on one machine each take a different GPU: a job holds an exclusive lock on
    ``<lock_dir>/gpu-<index>.lock`` until it exits (the operating system releases it, even after a
    kill). When every GPU is taken, it waits for one. Under SLURM a job sees only the GPUs it was
    given (CUDA_VISIBLE_DEVICES), so with one GPU there is nothing to choose.

    Parameters
    ----------
    count : int
        Visible CUDA devices (``torch.cuda.device_count()``).
    lock_dir : str or Path, optional
        Folder of the lock files; the system's temporary folder by default (one per machine).
    poll_s : float
        Seconds between tries while every GPU is taken.

    Returns
    -------
    int
        The claimed device's index, 0 <= index < count.
    """
    if _CLAIMS:
        return next(iter(_CLAIMS))
    folder = Path(lock_dir or Path(tempfile.gettempdir(), f"traitpipe-gpus-{os.getuid()}"))
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index in range(count):
            handle = open(folder / f"gpu-{index}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _CLAIMS[index] = handle
            return index
        if not waited:
            print(f"traitpipe: all {count} GPUs are taken by other jobs; waiting for one", file=sys.stderr, flush=True)
            waited = True
        time.sleep(poll_s)


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a config's ``device`` value.

    Parameters
    ----------
    name : str
        "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or "mps". "auto" and "cuda"
        take a GPU no other traitpipe job on this machine holds (:func:`claim_gpu`): under SLURM the
        one it assigned, on a machine with several GPUs a free one.

    Raises
    ------
    RuntimeError
        When the config asks for CUDA or MPS and none is available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return torch.device("cuda", claim_gpu(count) if count > 1 else 0)
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
