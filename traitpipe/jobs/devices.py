"""Which device a job takes: a config's ``device`` value resolved, and on a machine with several GPUs one that no
other traitpipe job holds (a lock file per GPU, held for the job's life)."""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

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
