"""I/O shared by the jobs: shard rows, pixels through the one reader, failures, model files."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from traitpipe.collection.images import ImageError, read_image, stored_orientation
from traitpipe.collection.manifest import read_manifest
from traitpipe.store.atomic import atomic_path
from traitpipe.store.schemas import FAILURES
from traitpipe.segment.parts import check_support_mask
from traitpipe.segment.references import find_references
from traitpipe.store.tables import write_table


def job_arguments(name: str, *options: str, paths: tuple[str, ...] = (), lists: tuple[str, ...] = (),
                  optional: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Parser of ``traitpipe job <name>``: ``--config RUN_CONFIG``, ``--threads N`` and the files the rule hands over.

    Parameters
    ----------
    name : str
    options : str
        Required plain values (``shard``, ``method``).
    paths : tuple of str
        Required files, one each (``--images PATH``).
    lists : tuple of str
        Lists of files (``--tables A B C``; may be empty).
    optional : tuple of str
        Files a rule hands over only when the config has them (``--phylogeny PATH``; None otherwise).

    Every path a job reads or writes arrives this way: jobs derive no path (the rule's
    ``input:`` and ``output:`` are the one place that names them).
    """
    parser = argparse.ArgumentParser(prog=f"traitpipe job {name}")
    parser.add_argument("--config", required=True, help="the run's resolved config (results/run/config.json)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    for option in (*options, *paths):
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, required=True)
    for option in lists:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, nargs="*", default=[])
    for option in optional:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, default=None)
    return parser


def start_job(args: argparse.Namespace) -> dict:
    """Set torch's CPU threads (when given) and return the run config of a parsed job command line.

    The run config is the one the workflow validated when it was parsed, every default filled
    (``results/run/config.json``): it is read as it is, not validated again.
    """
    if args.threads:
        import torch  # only the jobs that compute pay for importing torch

        torch.set_num_threads(args.threads)
    path = Path(args.config)
    if not path.is_file():
        raise SystemExit(f"run config {path} not found: jobs run from the workflow (traitpipe run), which writes it")
    return json.loads(path.read_text())


def read_rows(tables: str | Sequence[str]) -> pd.DataFrame:
    """The ``images`` rows of one or more table files, ordered by (species, image_id)."""
    files = [tables] if isinstance(tables, str) else list(tables)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values(
        ["species", "image_id"]).reset_index(drop=True)


def load_pixels(config: dict, rows: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray, pd.DataFrame]:
    """Read the images of some ``images`` rows through the shared reader.

    Parameters
    ----------
    config : dict
        The run config (collection root, max_pixels).
    rows : pandas.DataFrame
        Rows of the ``images`` table.

    Returns
    -------
    pixels : list of numpy.ndarray, uint8, each (H_i, W_i, 3)
        The images that could be read, in row order.
    ok : numpy.ndarray of bool, shape (len(rows),)
        Which rows were read.
    failures : pandas.DataFrame
        ``failures`` columns for the others (without ``stage``).
    """
    root = Path(config["collection"]["root"])
    pixels, ok, failed = [], np.zeros(len(rows), bool), []
    for i, row in enumerate(rows.itertuples()):
        file = Path(row.path) if Path(row.path).is_absolute() else root / row.path
        try:
            pixels.append(read_image(file, max_pixels=config["collection"]["max_pixels"]))
            ok[i] = True
        except ImageError as error:
            failed.append({"path": row.path, "image_id": row.image_id, "species": row.species,
                           "shard": row.shard, "row": row.row, "reason": str(error)})
    return pixels, ok, pd.DataFrame(failed, columns=FAILURES.names)


def write_failures(path: str | Path, failures: pd.DataFrame, prov: dict) -> Path:
    """Write one step's ``failures`` rows (an empty file when all went well)."""
    return write_table(failures, path, "failures", prov)


def write_json(path: str | Path, value: dict) -> Path:
    """Write a JSON file atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=1, sort_keys=True, default=str) + "\n")
    return Path(path)


def labelled_images(config: dict, tables: Sequence[str], size: int, mean, std, val_fraction: float, seed: int,
                    classes=None):
    """Every readable image of ``tables`` as one model batch, with labels and a validation split by specimen.

    ``classes`` (a model's class order; default: the sorted species) sets which label each species gets.

    Returns
    -------
    rows : pandas.DataFrame
        The readable ``images`` rows, in batch order.
    images : torch.Tensor, float32, shape (N, 3, size, size)
    labels : torch.Tensor, int64, shape (N,)
    is_val : numpy.ndarray of bool, shape (N,)
        Held-out specimens (an image without a specimen id is its own specimen).
    failures : pandas.DataFrame
        ``failures`` rows of the unreadable images.
    """
    import torch

    from traitpipe.models.transforms import to_batch

    rows = read_rows(tables)
    pixels, ok, failures = load_pixels(config, rows)
    rows = rows[ok].reset_index(drop=True)
    images = to_batch(pixels, size, mean, std)
    order = {name: i for i, name in enumerate(classes if classes is not None else sorted(rows["species"].unique()))}
    labels = torch.tensor(rows["species"].map(order).to_numpy(np.int64))
    return rows, images, labels, held_out(rows, val_fraction, seed), failures


def references(config: dict, manifest: str) -> tuple[dict[str, tuple[str, str]], str]:
    """Each species' (support image, mask) files, and where masks were looked for (see ``find_references``)."""
    collection = config["collection"]
    return find_references(read_manifest(manifest, collection["columns"], collection["root"]),
                           config["segment"]["masks"], collection["root"], collection["columns"]["mask"])


def load_support(config: dict, species: str, chosen: dict, where: str,
                 names: dict[int, str] | None) -> tuple[np.ndarray, np.ndarray, str, dict[int, str]]:
    """A species' support image (H, W, 3) uint8, its checked labels (H, W) uint8, its image file and part names.

    Raises ImageError when the species has no usable reference: none found (the reason names where it was
    looked for), unreadable, or failing :func:`~traitpipe.segment.parts.check_support_mask`.
    """
    if species not in chosen:
        raise ImageError(f"no reference mask for species {species!r} (looked in {where})")
    image_file, mask_file = chosen[species]
    support = read_image(image_file, max_pixels=config["collection"]["max_pixels"])
    stored_size, orientation = stored_orientation(image_file)
    mask = read_mask(mask_file)
    parts = names or {int(v): f"part_{int(v)}" for v in np.unique(mask) if v > 0}
    try:
        labels = check_support_mask(mask, parts, mask_file, support.shape[:2], stored_size=stored_size,
                                    orientation=orientation, image=image_file)
    except ValueError as error:  # a bad reference fails its species (failures rows), not the whole shard
        raise ImageError(str(error)) from None
    return support, labels, image_file, parts


def read_mask(file: str) -> np.ndarray:
    """A reference mask as stored (2-D labels); :class:`ImageError` when it cannot be read."""
    try:
        return np.array(Image.open(file))
    except (OSError, ValueError) as error:
        raise ImageError(f"unreadable reference mask {file}: {error}") from None


def phylo_images(config: dict, rows: pd.DataFrame):
    """Phylo-NN's input: images in [-1, 1] at ``phylo.image_size`` (N, 3, S, S) float32, which rows were
    readable (bool (len(rows),)), and ``failures`` rows for the others."""
    from traitpipe.models.transforms import to_batch

    pixels, ok, failures = load_pixels(config, rows)
    return to_batch(pixels, config["phylo"]["image_size"], [0.5] * 3, [0.5] * 3), ok, failures


def species_ranks(config: dict, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The taxonomy rank columns (``collection.columns.ranks``) of ``images`` rows, one row per species; None without."""
    ranks = list(config["collection"]["columns"]["ranks"])
    return rows.drop_duplicates("species").set_index("species")[ranks] if ranks else None


def held_out(rows: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """Which ``images`` rows are held out: whole specimens, about ``val_fraction`` of each species'.

    An image without a specimen id is its own specimen. Returns bool (len(rows),).
    """
    from traitpipe.models.training import split_by_specimen

    specimens = rows["specimen_id"].fillna("").to_numpy(dtype=str)
    specimens = np.where(specimens == "", rows["image_id"].to_numpy(dtype=str), specimens)
    species = rows["species"].astype("category").cat.codes.to_numpy()
    return split_by_specimen(specimens, species, val_fraction, seed)
