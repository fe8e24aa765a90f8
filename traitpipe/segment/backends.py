"""Segmentation backends: what the segment step asks of a model that carries a species' reference
labels onto its other images, and the registry that names them (``segment.backend``).

A backend is a class built as ``Backend(settings, device, tuned)`` (the ``segment`` config section,
a torch device, a fine-tuned weights file or None) with:

- ``description`` (dict): what provenance records of the model (``random_weights`` included);
- ``segment(support, support_labels, queries)`` -> an iterator of :class:`traitpipe.segment.sst.Frame` (each
  frame's label image and per-part masks, the parts, its chunk), frame 0 the support, then the queries in order;
  ``queries`` is a sequence read one item at a time and in order (``queries[k]`` for k = 0, 1, ..., the
  last one again allowed; ``len``; no slices), which the caller may read from disk as they are asked for,
  so an item may raise :class:`traitpipe.collection.images.ImageError`, and going back raises ValueError;
- ``round_trip_iou(support, query, support_labels, part)`` -> float, SST's retrieval score.

SAM 2's video predictor (SST: one pseudo-video per species) is the first. A second (say SAM 2's
image predictor, one query at a time) is a new module and a line in :data:`BACKENDS` (and the
config schema's ``segment.backend`` list, which a test keeps equal to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from traitpipe.registry import Registry

#: name -> "module:Class"; imported only when a run names it.
BACKENDS = Registry("segmentation backend")
BACKENDS.register("sam2_video", "traitpipe.segment.backends:SAM2Video")


def load_segmenter(settings: dict, device: torch.device, tuned: str | Path | None = None,
                   trained: str | Path | None = None):
    """The backend ``settings["backend"]`` names, built on ``device`` (see the module docstring)."""
    return BACKENDS[settings["backend"]](settings, device, tuned, trained)


class SAM2Video:
    """SST with SAM 2's video predictor: the support frame, then the species' images as a pseudo-video.

    Parameters
    ----------
    settings : dict
        The ``segment`` config section (``config``, ``checkpoint``, ``image_size``, ``seed``,
        ``chunk_size``, ``precision``).
    device : torch.device
    tuned : str, Path or None
        A fine-tuned checkpoint (``sst_finetune``'s output) to load instead of ``settings["checkpoint"]``.
    trained : str, Path or None
        The SAM 2 trained here (``sam2_train``'s output, when ``settings["checkpoint"]`` is ``train``).

    Attributes
    ----------
    predictor : sam2.sam2_video_predictor.SAM2VideoPredictor
    description : dict
        backend, config, checkpoint, image_size, random_weights, fine_tuned, sha256.
    """

    def __init__(self, settings: dict, device: torch.device, tuned: str | Path | None = None,
                 trained: str | Path | None = None):
        from traitpipe.models.checkpoints import sha256_file
        from traitpipe.models.device import resolve_precision
        from traitpipe.segment.sst import load_sam2

        if settings["checkpoint"] == "train" and trained is None:
            raise ValueError("segment.checkpoint is 'train': hand over the trained SAM 2 (models/sam2_trained.pt)")
        checkpoint = tuned or trained or settings["checkpoint"]
        torch.manual_seed(settings["seed"])
        self.predictor = load_sam2(settings["config"], checkpoint, device=str(device),
                                   image_size=settings["image_size"])
        self.chunk_size = settings["chunk_size"]
        self.precision = resolve_precision(settings["precision"], device)
        local = checkpoint is not None and Path(checkpoint).is_file()
        self.description = {"backend": "sam2_video", "config": settings["config"], "checkpoint": str(checkpoint)
                            if checkpoint is not None else None, "image_size": settings["image_size"],
                            "random_weights": settings["checkpoint"] is None, "fine_tuned": tuned is not None,
                            "trained_here": trained is not None,
                            "sha256": sha256_file(checkpoint) if local else None}

    def segment(self, support: np.ndarray, support_labels: np.ndarray, queries: Sequence[np.ndarray]):
        """Label images and per-part masks of the support (its own labels) and every query, frame by frame.

        Parameters
        ----------
        support : numpy.ndarray, uint8, (H_0, W_0, 3)
        support_labels : numpy.ndarray, uint8, (H_0, W_0)
            0 = background, 1..K = parts.
        queries : sequence of numpy.ndarray, uint8, each (H_i, W_i, 3)
            Any indexable: each query is read when SAM 2 tracks it.

        Yields
        ------
        traitpipe.segment.sst.Frame
            len(queries) + 1 frames, the support's first; ``chunk``: the pseudo-video (``segment.chunk_size``)
            each was tracked in.
        """
        from traitpipe.segment.sst import Video, segment_frames

        return segment_frames(self.predictor, Video(support, queries), support_labels, chunk_size=self.chunk_size,
                              precision=self.precision)

    def round_trip_iou(self, support: np.ndarray, query: np.ndarray, support_labels: np.ndarray, part: int) -> float:
        """SST's two-pass round trip of one part through one query (see ``traitpipe.segment.finetune``)."""
        from traitpipe.segment.finetune import round_trip_iou

        return round_trip_iou(self.predictor, support, query, support_labels, part, precision=self.precision)
