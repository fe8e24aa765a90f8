"""Provenance: what produced a file, carried in every Parquet footer and Zarr store."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import traitpipe
from traitpipe.config import config_hash

#: Libraries whose versions every output records.
LIBRARIES = ("torch", "torchvision", "timm", "sam2", "numpy", "pyarrow", "zarr", "dask", "pillow", "snakemake")


@functools.cache
def git_commit() -> str:
    """Commit of the traitpipe source tree, with ``+dirty`` for local changes; "unknown" outside git."""
    here = Path(traitpipe.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (without importing them)."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance(config: dict, *, device: str = "cpu", models: dict | None = None, precision: str = "float32") -> dict:
    """The provenance record of one output.

    Parameters
    ----------
    config : dict
        The validated run config.
    device : str
        Where the compute ran ("cpu", "cuda:0", ...).
    models : dict or None
        Per model used: ``{"name": {"source": ..., "sha256": ..., "random_weights": bool}}``.
    precision : str
        The precision the compute ran in ("float32" or "bfloat16"; see ``traitpipe.models.device``).

    Returns
    -------
    dict
        JSON-serialisable: traitpipe version, git commit, run id, config hash,
        library versions, python, platform, device, precision, models.
    """
    return {
        "traitpipe_version": traitpipe.__version__,
        "git_commit": git_commit(),
        "run_id": config["run_id"],
        "config_hash": config_hash(config),
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "precision": precision,
        "models": models or {},
    }
