"""Atomic writes: an output appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | Path):
    """Yield a temporary path beside ``final``; move it to ``final`` only if the block succeeds.

    Works for files and folders (a Zarr store). On an exception the temporary
    path is removed and whatever was at ``final`` before is left untouched.

    Parameters
    ----------
    final : str or Path
        Where the finished output belongs. Its folder is created.

    Yields
    ------
    Path
        A hidden temporary name in the same folder (same file system, so the
        final move is a rename).

    Notes
    -----
    A writer killed mid-write (SIGKILL: no exception to clean up on) leaves its
    hidden ``.<name>.tmp-<pid>`` (or ``.old-<pid>``) behind. The next write of
    the same output removes every such leftover first: one output has one writer
    at a time (Snakemake runs one job per output), so they are all stale.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*final.parent.glob(f".{glob.escape(final.name)}.tmp-*"),
                  *final.parent.glob(f".{glob.escape(final.name)}.old-*")]:
        _remove(stale)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and final.exists():
        # a folder cannot be renamed over a non-empty one: move the old one aside first
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        _remove(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


def write_json(path: str | Path, value: dict) -> Path:
    """Write a JSON file atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=1, sort_keys=True, default=str) + "\n")
    return Path(path)
