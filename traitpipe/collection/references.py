"""Where each species' labelled reference (support image and mask) is, and the declared part names.

The workflow finds these when it is parsed, so that a reference mask, the part names file
and the support images are inputs of the steps that read them (editing one reruns them), and
hands each segment job its species' pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def reference_origin(masks: str | None, root: str | Path, mask_column: str | None) -> str:
    """Where reference masks are looked for (``segment.masks``), in words, for failure reasons.

    Examples
    --------
    >>> reference_origin(None, "/c", "mask")
    "manifest column 'mask'"
    >>> reference_origin("masks", "/c", "mask")
    'folder /c/masks (<image stem>.png)'
    """
    if masks is None:
        return f"manifest column {mask_column!r}" if mask_column else "the manifest (collection.columns.mask is not set)"
    return f"folder {Path(root) / masks} (<image stem>.png)"


def find_references(manifest: pd.DataFrame, masks: str | None, root: str | Path) -> dict[str, tuple[str, str]]:
    """Each species' labelled reference: species -> (image file, mask file), the first labelled row of each.

    Parameters
    ----------
    manifest : pandas.DataFrame
        From ``traitpipe.collection.manifest.read_manifest`` (``species``, ``file``, ``path``, ``mask``).
    masks : str or None
        ``segment.masks``: None = the manifest's mask column (on the row of the image it labels);
        a folder under ``root`` = masks named after the image they label (``<folder>/<image stem>.png``).
    root : str or Path
        The collection root.

    Returns
    -------
    dict of str to (str, str)
        Species without a labelled row are absent (see :func:`reference_origin` for the message).
    """
    if masks is None:
        labelled = manifest[manifest["mask"] != ""]
        pairs = zip(labelled["species"], labelled["file"], labelled["mask"])
    else:
        folder = Path(root) / masks
        files = [folder / f"{Path(p).stem}.png" for p in manifest["path"]]
        found = [f.is_file() for f in files]
        pairs = zip(manifest["species"][found], manifest["file"][found], [str(f) for f, ok in zip(files, found) if ok])
    chosen: dict[str, tuple[str, str]] = {}
    for species, image, mask in pairs:
        chosen.setdefault(species, (image, mask))
    return chosen


def parts_file(parts: str | dict | None, root: str | Path) -> Path | None:
    """The JSON file that ``segment.parts`` names (under ``root``), or None when parts are given inline or not at all."""
    return Path(root) / parts if isinstance(parts, str) else None


def part_names(parts: str | dict | None, root: str | Path) -> dict[int, str] | None:
    """Declared parts (label -> name) from ``segment.parts``: a mapping, or a JSON file under ``root``.

    Raises
    ------
    FileNotFoundError
        A named file that does not exist.
    """
    if parts is None:
        return None
    file = parts_file(parts, root)
    if file is not None:
        if not file.is_file():
            raise FileNotFoundError(f"segment.parts: no file {file}")
        parts = json.loads(file.read_text())
    return {int(k): str(v) for k, v in parts.items()}
