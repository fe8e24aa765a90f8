"""Zarr v3 map stores: one store per product and shard, one chunk per image, up to
:data:`IMAGES_PER_FILE` chunks to a file (Zarr v3's sharding codec: a million images are thousands of
files, not millions).

Every array's first dimension is ``image``; the ``image_id`` array says which
image each index holds; provenance sits in the group attributes. A store is
written under a temporary name, its metadata consolidated, and renamed when complete: zarr, dask and
xarray (``xarray.open_zarr``) open it without a warning.
"""

from __future__ import annotations

import collections
import contextlib
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from traitpipe.store.atomic import atomic_path

#: Most images' chunks in one file of an array (a Zarr v3 shard).
IMAGES_PER_FILE = 512
#: Most bytes of rows :func:`keep_images` moves at once (512 SST label maps at a 1024 canvas would be 512 MiB).
MOVE_BYTES = 64 * 2**20
#: name -> (shape of one image's array, dtype, dimension names after "image")
ArraySpec = tuple[tuple[int, ...], str, tuple[str, ...]]


def map_path(results: str | Path, product: str, shard: str) -> Path:
    """``<results>/maps/<product>/shard-<shard>.zarr``."""
    return Path(results) / "maps" / product / f"shard-{shard}.zarr"


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


@contextlib.contextmanager
def map_writer(path: str | Path, image_ids: Sequence[str], arrays: Mapping[str, ArraySpec], attrs: dict,
               index: str = "image"):
    """Create a map store to fill image by image; it appears at ``path`` only when the block succeeds.

    Parameters
    ----------
    path : str or Path
        Final store path, normally from :func:`map_path`.
    image_ids : sequence of str, length N
        The images, in index order.
    arrays : mapping
        ``name -> (shape, dtype, dims)``: each array gets shape ``(N, *shape)``,
        chunks ``(1, *shape)`` stored :data:`IMAGES_PER_FILE` to a file, blosc-zstd, dimension names
        ``("image", *dims)``.
    attrs : dict
        Group attributes (JSON-serialisable), e.g. ``{"provenance": ...}``.
    index : str
        What the first dimension counts: ``image`` (an ``image_id`` array names them), or e.g.
        ``species`` for a store of per-species summaries (a ``species_id`` array).

    Yields
    ------
    zarr.Group
        Write ``group[name][i] = array`` for each image ``i``.
    """
    n = len(image_ids)
    with atomic_path(path) as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        group.attrs.update(attrs)
        ids = group.create_array(f"{index}_id", shape=(n,), dtype=str, chunks=(max(n, 1),),
                                 dimension_names=(index,))
        if n:
            ids[:] = np.asarray(image_ids, dtype=str)
        for name, (shape, dtype, dims) in arrays.items():
            if len(dims) != len(shape):
                raise ValueError(f"array {name!r}: {len(shape)} dimensions but names {dims}")
            group.create_array(name, shape=(n, *shape), dtype=dtype, chunks=(1, *shape),
                               shards=(min(max(n, 1), IMAGES_PER_FILE), *shape),
                               compressors=_compressor(), dimension_names=(index, *dims),
                               fill_value=0)
        yield group
        _consolidate(tmp)


def _consolidate(path: Path) -> None:
    """Gather the store's metadata into its root ``zarr.json``: xarray's ``open_zarr`` then opens it in one
    read and without its fall-back warning. zarr warns that consolidated metadata is not yet in the Zarr v3
    specification; zarr, xarray and dask read it, and a reader without it still reads every array."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", UserWarning)
        zarr.consolidate_metadata(str(path), zarr_format=3)


@contextlib.contextmanager
def background_writes(group: zarr.Group, depth: int = 4):
    """Write a map store's arrays in a background thread while the caller computes its next batch.

    Parameters
    ----------
    group : zarr.Group
        A store from :func:`map_writer`.
    depth : int
        Most writes queued at once: a write waits for the oldest beyond that, so at most ``depth`` batches
        are held.

    Yields
    ------
    callable
        ``write(name, start, values)`` queues ``group[name][start:start + len(values)] = values``
        (``values``: numpy.ndarray (B, ...), not changed by the caller afterwards).

    Every write is done when the block ends, and the first failed one raises there (or at a later
    ``write``). When the block raises, queued writes are dropped: :func:`map_writer` then discards the store.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with map_writer(f"{folder}/m.zarr", ["a", "b"], {"cam": ((2,), "float32", ("x",))}, {}) as group:
    ...         with background_writes(group) as write:
    ...             write("cam", 0, np.ones((2, 2), np.float32))
    ...     open_maps(f"{folder}/m.zarr")["cam"][:].sum()
    np.float32(4.0)
    """
    arrays = {name: group[name] for name in group.array_keys()}
    pending: collections.deque[Future] = collections.deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="map-writes") as pool:
        def write(name: str, start: int, values: np.ndarray) -> None:
            while len(pending) >= depth:
                pending.popleft().result()
            pending.append(pool.submit(arrays[name].__setitem__, slice(start, start + len(values)), values))

        try:
            yield write
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        try:
            while pending:
                pending.popleft().result()
        finally:  # after a failed write, drop those still queued
            for future in pending:
                future.cancel()


def keep_images(group: zarr.Group, keep: np.ndarray) -> None:
    """Leave out the images not kept, in a store still being written (inside :func:`map_writer`'s block).

    A shard job writes every image's row as it goes, an unreadable image's too (its maps of a blank input),
    because it learns which images cannot be read only when their batch is read. At the end, when some could
    not, every array moves its kept rows forward in place, in order, and is shortened to their count.

    Parameters
    ----------
    group : zarr.Group
        A store from :func:`map_writer`: every array's first dimension is the N images.
    keep : numpy.ndarray of bool, shape (N,)

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with map_writer(f"{folder}/m.zarr", ["a", "b", "c"], {"cam": ((2,), "float32", ("x",))}, {}) as group:
    ...         group["cam"][:] = np.arange(6, dtype=np.float32).reshape(3, 2)
    ...         keep_images(group, np.array([True, False, True]))
    ...     stored = open_maps(f"{folder}/m.zarr")
    ...     stored["image_id"][:].tolist(), stored["cam"][:].tolist()
    (['a', 'c'], [[0.0, 1.0], [4.0, 5.0]])
    """
    kept = np.flatnonzero(keep)
    if len(kept) == len(keep):
        return
    for name in group.array_keys():
        array = group[name]
        row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:]))
        block = max(1, min(IMAGES_PER_FILE, MOVE_BYTES // max(row_bytes, 1)))  # at most a file's worth, and
        for start in range(0, len(kept), block):  # MOVE_BYTES; a row moves only forward, onto rows already read
            rows = kept[start:start + block]
            array[start:start + len(rows)] = array.oindex[rows]
        array.resize((len(kept), *array.shape[1:]))


def write_maps(path: str | Path, image_ids: Sequence[str], arrays: Mapping[str, tuple[np.ndarray, tuple[str, ...]]],
               attrs: dict, index: str = "image") -> Path:
    """Write whole arrays at once (see :func:`map_writer`).

    Parameters
    ----------
    arrays : mapping
        ``name -> (data, dims)``, ``data`` of shape (N, ...) with N = len(image_ids),
        ``dims`` the dimension names after "image".
    """
    specs = {name: (data.shape[1:], str(data.dtype), dims) for name, (data, dims) in arrays.items()}
    for name, (data, _) in arrays.items():
        if len(data) != len(image_ids):
            raise ValueError(f"array {name!r} has {len(data)} images, image_ids has {len(image_ids)}")
    with map_writer(path, image_ids, specs, attrs, index) as group:
        for name, (data, _) in arrays.items():
            if len(data):
                group[name][:] = data
    return Path(path)


def ome_label_attrs(parts: Mapping[int, str], array: str = "part_labels") -> dict:
    """OME-Zarr 0.5 metadata that makes a store of part labels an NGFF label image (ome-zarr-models validates it).

    The store's ``array`` (image, y, x) is the label image's one resolution level; ``image-label`` gives
    each part its name and the colour the report draws it in (matplotlib's tab10, by label value); 0 is
    the background, transparent. NGFF reserves the name ``labels`` in an image group (for a group of
    label images), so ``array`` must be another name.

    Parameters
    ----------
    parts : mapping of int to str
        Label value -> part name; label 0 is the background, named ``background`` here.
    array : str
        The labels array's path in the store.

    Returns
    -------
    dict
        ``{"ome": {...}}``, for the group attributes.

    Examples
    --------
    >>> meta = ome_label_attrs({1: "head", 2: "thorax"})["ome"]
    >>> meta["version"], [p["part"] for p in meta["image-label"]["properties"]]
    ('0.5', ['background', 'head', 'thorax'])
    >>> meta["image-label"]["colors"][0]
    {'label-value': 0, 'rgba': [0, 0, 0, 0]}
    """
    from matplotlib import colormaps

    tab10 = colormaps["tab10"]
    parts = {0: "background"} | {int(value): name for value, name in parts.items()}
    colours = [{"label-value": value, "rgba": [round(255 * c) for c in tab10(value % 10)] if value else [0, 0, 0, 0]}
               for value in sorted(parts)]
    return {"ome": {
        "version": "0.5",
        "multiscales": [{"name": array,
                         "axes": [{"name": "image"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                         "datasets": [{"path": array,
                                       "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}],
        "image-label": {"colors": colours,
                        "properties": [{"label-value": v, "part": parts[v]} for v in sorted(parts)]},
    }}


def open_maps(path: str | Path) -> zarr.Group:
    """Open a finished map store read-only."""
    return zarr.open_group(store=str(path), mode="r", zarr_format=3)
