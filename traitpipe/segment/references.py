"""Where each species' labelled reference (support image and mask) is, and the declared part names.

The workflow reads these when it is parsed, so that a reference mask, the part names file
and the support images are inputs of the steps that read them: editing one reruns them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def find_references(manifest: pd.DataFrame, masks: str | None, root: str | Path,
                    mask_column: str | None) -> tuple[dict[str, tuple[str, str]], str]:
    """Each species' labelled reference: species -> (image file, mask file), and where masks were looked for.

    Parameters
    ----------
    manifest : pandas.DataFrame
        From ``traitpipe.collection.manifest.read_manifest`` (``species``, ``file``, ``path``, ``mask``).
    masks : str or None
        ``segment.masks``: None = the manifest's mask column (on the row of the image it labels);
        a folder under ``root`` = masks named after the image they label (``<folder>/<image stem>.png``).
    root : str or Path
        The collection root.
    mask_column : str or None
        The manifest's mask column name, for the message.

    Returns
    -------
    chosen : dict of str to (str, str)
        The first labelled row of every species that has one.
    where : str
        Where masks were looked for (for failure reasons).
    """
    if masks is None:
        labelled = manifest[manifest["mask"] != ""]
        where = f"manifest column {mask_column!r}" if mask_column else "the manifest (collection.columns.mask is not set)"
        pairs = zip(labelled["species"], labelled["file"], labelled["mask"])
    else:
        folder = Path(root) / masks
        where = f"folder {folder} (<image stem>.png)"
        files = [folder / f"{Path(p).stem}.png" for p in manifest["path"]]
        found = [f.is_file() for f in files]
        pairs = zip(manifest["species"][found], manifest["file"][found], [str(f) for f, ok in zip(files, found) if ok])
    chosen: dict[str, tuple[str, str]] = {}
    for species, image, mask in pairs:
        chosen.setdefault(species, (image, mask))
    return chosen, where


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
