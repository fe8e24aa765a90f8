"""Batches streamed from a dataset: the order of each epoch and a DataLoader that reads ahead in workers.

A training loop never holds the collection: it draws an order of image indices per epoch
(:func:`epoch_order`, optionally at most ``cap`` images per class) and :class:`Batches` reads those
images in worker processes, a few batches ahead of the model. The same code runs on a tensor already in
memory (tests, small features), so a loop has one path.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


def epoch_order(labels: torch.Tensor, generator: torch.Generator, cap: int | None = None) -> torch.Tensor:
    """The image indices of one epoch, shuffled; at most ``cap`` images of each class, drawn anew each epoch.

    Parameters
    ----------
    labels : torch.Tensor, int64, shape (N,)
        Class of every image.
    generator : torch.Generator
        The loop's generator: the order is reproducible from its seed.
    cap : int or None
        None: every image once (``torch.randperm(N)``). An int: a class with more images gives a random
        ``cap`` of them, so one very common species neither dominates nor lengthens an epoch.

    Returns
    -------
    torch.Tensor, int64, shape (epoch_length(labels, cap),)

    Examples
    --------
    >>> labels = torch.tensor([0, 0, 0, 0, 1])
    >>> order = epoch_order(labels, torch.Generator().manual_seed(0), cap=2)
    >>> sorted(labels[order].tolist())
    [0, 0, 1]
    """
    if cap is None:
        return torch.randperm(len(labels), generator=generator)
    chosen = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:cap]])
    picked = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
    return picked[torch.randperm(len(picked), generator=generator)]


def epoch_length(labels: torch.Tensor, cap: int | None = None) -> int:
    """How many images one epoch of :func:`epoch_order` has (int)."""
    if cap is None or len(labels) == 0:
        return len(labels)
    return int(torch.unique(labels, return_counts=True)[1].clamp(max=cap).sum())


class _Chunks:
    """Batch sampler: consecutive ``batch_size`` slices of the order of the current pass."""

    def __init__(self, batch_size: int):
        self.batch_size, self.order = batch_size, torch.empty(0, dtype=torch.long)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.order), self.batch_size):
            yield self.order[start:start + self.batch_size].tolist()

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


def _one_thread(_: int) -> None:
    """A worker decodes one image at a time: one torch thread, so workers do not fight the model's threads."""
    torch.set_num_threads(1)


class Batches:
    """Batches of a map-style dataset, in an order given for each pass, read ahead by DataLoader workers.

    Parameters
    ----------
    images : torch.utils.data.Dataset or torch.Tensor
        Item ``i`` is one model input, e.g. float32 (3, S, S); a tensor (N, ...) serves as its own dataset.
    batch_size : int
    workers : int
        DataLoader worker processes that read and decode (0: in this process). They persist across passes.
    device : torch.device or None
        On CUDA, batches come in pinned memory, so ``.to(device, non_blocking=True)`` overlaps the copy.

    Examples
    --------
    >>> batches = Batches(torch.arange(10.0), batch_size=2)
    >>> [(index.tolist(), batch.tolist()) for index, batch in batches(torch.tensor([7, 3, 5]))]
    [([7, 3], [7.0, 3.0]), ([5], [5.0])]
    """

    def __init__(self, images: Dataset | torch.Tensor, batch_size: int, workers: int = 0,
                 device: torch.device | None = None):
        self.images, self.batch_size = images, batch_size
        self._chunks = _Chunks(batch_size)
        workers = workers if len(images) > batch_size else 0  # one batch: not worth starting processes
        self._loader = DataLoader(images, batch_sampler=self._chunks, num_workers=workers,
                                  pin_memory=device is not None and torch.device(device).type == "cuda",
                                  persistent_workers=workers > 0, worker_init_fn=_one_thread if workers else None)

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (index int64 (B,), batch (B, ...)) for ``order`` (default: every item in turn)."""
        order = torch.arange(len(self.images)) if order is None else order
        self._chunks.order = order
        start = 0
        for batch in self._loader:
            yield order[start:start + self.batch_size], batch
            start += self.batch_size
