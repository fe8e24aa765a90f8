"""SST: Static Segmentation by Tracking on SAM 2 (docs/methods.md, section 1).

The specimens of one species are played to SAM 2's video predictor as a
pseudo-video whose frame 0 is the species' labelled support image; every part
of the support mask is tracked as its own object, and keeps its own mask (its
logits > 0), so parts may overlap as in the authors' ``propagate_masks``. The
label image is derived from those masks by one rule (:func:`frame_masks`).
Frames go to SAM 2 from memory,
preprocessed exactly as SAM 2's own JPEG loader does, one at a time when SAM 2
asks for them; outputs SAM 2 will never read again are dropped, and long runs are
cut into chunks that each start from the support frame, so memory stays bounded
however many specimens a species has.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from traitpipe.models.device import autocast

#: SAM 2's image normalisation (its video loader's defaults).
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
#: Outputs older than this many frames are never read again: SAM 2 reads the masks of the
#: last ``num_maskmem - 1`` (6) frames and the object pointers of the last 15.
KEEP_FRAMES = 16


#: SAM 2 configs that ship with traitpipe (``segment.config`` names them like the released ones).
PACKAGED_CONFIGS = {"sam2_small": Path(__file__).parent / "configs" / "sam2_small.yaml"}


def config_file(name: str) -> str:
    """Where a SAM 2 model config is: a YAML file (a path, or a config traitpipe ships: "sam2_small"), or a
    Hydra config path inside the sam2 package ("sam2.1_hiera_t" -> "configs/sam2.1/sam2.1_hiera_t.yaml").

    Examples
    --------
    >>> config_file("sam2.1_hiera_t")
    'configs/sam2.1/sam2.1_hiera_t.yaml'
    >>> config_file("sam2_small").endswith("traitpipe/segment/configs/sam2_small.yaml")
    True
    """
    if name in PACKAGED_CONFIGS:
        return str(PACKAGED_CONFIGS[name])
    if name.endswith(".yaml"):
        return name
    folder = "sam2.1" if name.startswith("sam2.1") else "sam2"
    return f"configs/{folder}/{name}.yaml"


def build_sam2(config: str | Path, image_size: int, target: str, extra: dict | None = None) -> torch.nn.Module:
    """A SAM 2 model from a config file (a path, or a config inside the sam2 package), of class ``target``,
    random weights.

    The released configs are Hydra configs inside the sam2 package (built by sam2's own builder in
    :func:`load_sam2`); this builds one from a file anywhere, with the same overrides: ``model._target_``,
    ``model.image_size`` and ``extra`` (``{key: value}`` under ``model``).
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not Path(config).is_file():  # a config inside the sam2 package ("configs/sam2.1/...yaml")
        from importlib.resources import files

        config = files("sam2") / str(config)
    cfg = OmegaConf.load(str(config))
    cfg.model._target_ = target
    cfg.model.image_size = image_size
    for key, value in (extra or {}).items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_sam2(config: str = "sam2.1_hiera_t", checkpoint: str | Path | None = None, *, device: str = "cpu",
              image_size: int = 1024):
    """Build SAM 2's video predictor.

    Parameters
    ----------
    config : str
        Model config: "sam2.1_hiera_{t,s,b+,l}", "sam2_hiera_{t,s,b+,l}" (SAM 2.0), a "configs/...yaml"
        path inside the sam2 package, a config traitpipe ships ("sam2_small") or a YAML file anywhere.
    checkpoint : str, Path or None
        A local checkpoint file (SAM 2's layout, ``{"model": state_dict}``); a Hugging
        Face model id such as "facebook/sam2.1-hiera-large" (downloaded: only when the
        config names one); or None for random weights (deterministic after
        ``torch.manual_seed``).
    device : str
        "cpu", "cuda", ...; always passed on (SAM 2's own default is CUDA).
    image_size : int
        Input side; 1024 for the released checkpoints, a multiple of 32.

    Returns
    -------
    sam2.sam2_video_predictor.SAM2VideoPredictor
        In eval mode, ``apply_postprocessing=False``.
    """
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES, _hf_download, build_sam2_video_predictor

    from traitpipe.models.checkpoints import CheckpointError, load_state_dict

    if image_size % 32:
        raise ValueError(f"SAM 2 image_size must be a multiple of 32, got {image_size}")
    path = None
    if checkpoint is not None:
        if Path(checkpoint).is_file():
            path = str(checkpoint)
        elif str(checkpoint) in HF_MODEL_ID_TO_FILENAMES:
            config, path = _hf_download(str(checkpoint))
        else:
            raise FileNotFoundError(
                f"SAM 2 checkpoint {checkpoint!r} is neither a local file nor a known Hugging Face id "
                f"({', '.join(HF_MODEL_ID_TO_FILENAMES)})")
    file = config_file(config)
    if Path(file).is_file():  # a config file outside the sam2 package: the same predictor, built from it
        model = build_sam2(file, image_size, "sam2.sam2_video_predictor.SAM2VideoPredictor")
    else:
        model = build_sam2_video_predictor(file, None, device="cpu", apply_postprocessing=False,
                                           hydra_overrides_extra=[f"++model.image_size={image_size}"])
    if path is not None:  # SAM 2's layout, {"model": state dict}, read safely with messages that say what is wrong
        try:
            missing, unexpected = model.load_state_dict(load_state_dict(path, key="model"), strict=False)
        except RuntimeError as error:  # tensors of another shape: another model size
            raise CheckpointError(f"SAM 2 checkpoint {path} does not fit the config {config}: "
                                  f"{str(error).strip().splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise CheckpointError(f"SAM 2 checkpoint {path} does not fit the config {config}: missing "
                                  f"{missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval()


def preprocess(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """One frame as SAM 2's loader prepares it.

    Parameters
    ----------
    frame : numpy.ndarray, uint8, shape (H, W, 3)
    image_size : int

    Returns
    -------
    torch.Tensor, float32, shape (3, image_size, image_size)
        Resized with PIL's default filter, scaled to [0, 1], ImageNet-normalised.
    """
    resized = np.array(Image.fromarray(frame).resize((image_size, image_size))) / 255.0
    tensor = torch.from_numpy(resized).permute(2, 0, 1).to(torch.float32).contiguous()  # as SAM 2 stores it
    mean = torch.tensor(SAM2_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(SAM2_STD, dtype=torch.float32)[:, None, None]
    return (tensor - mean) / std


class LazyFrames(Sequence):
    """Frames preprocessed on demand: what SAM 2's state reads as ``state["images"]``.

    ``sizes`` records the (H, W) of every frame read, so nothing is decoded twice.
    """

    def __init__(self, frames: Sequence[np.ndarray], image_size: int):
        self.frames, self.image_size = frames, image_size
        self.sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        frame = self.frames[index]
        self.sizes[index] = frame.shape[:2]
        return preprocess(frame, self.image_size)


class Video(Sequence):
    """A species' pseudo-video: the support image, then the queries, each read only when SAM 2 asks for it.

    Examples
    --------
    >>> video = Video("support", ["first", "second"])
    >>> len(video), video[0], video[2]
    (3, 'support', 'second')
    """

    def __init__(self, support: np.ndarray, queries: Sequence[np.ndarray]):
        self.support, self.queries = support, queries

    def __len__(self) -> int:
        return 1 + len(self.queries)

    def __getitem__(self, index: int) -> np.ndarray:
        index = index + len(self) if index < 0 else index
        return self.support if index == 0 else self.queries[index - 1]


class Subset(Sequence):
    """Some frames of a sequence, by index, without reading them."""

    def __init__(self, frames: Sequence, indices: Sequence[int]):
        self.frames, self.indices = frames, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.frames[self.indices[index]]


def new_state(predictor, frames: Sequence[np.ndarray], num_frames: int | None = None) -> dict:
    """An inference state over in-memory frames, as ``predictor.init_state`` builds one from a folder.

    Outputs come back at the model's mask resolution (image_size / 4) for every
    frame; :func:`propagate` resizes each to its own frame's size. ``num_frames``
    (default: ``len(frames)``) is the length SAM 2 believes the video has: it sets
    how many object pointers are read and how their temporal positions are scaled,
    so every chunk of a long run uses the long run's value.
    """
    device = predictor.device
    low_res = predictor.image_size // 4
    state = {
        "images": LazyFrames(frames, predictor.image_size), "num_frames": num_frames or len(frames),
        "offload_video_to_cpu": False, "offload_state_to_cpu": False,
        "video_height": low_res, "video_width": low_res, "device": device, "storage_device": device,
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
        "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }
    with torch.inference_mode():  # as init_state: warm up the backbone on frame 0
        predictor._get_image_feature(state, frame_idx=0, batch_size=1)
    return state


def _drop_old_outputs(state: dict, frame_idx: int) -> None:
    """Forget what SAM 2 will never read again once ``frame_idx`` is done."""
    oldest = frame_idx - KEEP_FRAMES
    for outputs in state["output_dict_per_obj"].values():
        for old in [f for f in outputs["non_cond_frame_outputs"] if f <= oldest]:
            del outputs["non_cond_frame_outputs"][old]
    for tracked in state["frames_tracked_per_obj"].values():
        for old in [f for f in tracked if 0 < f <= oldest]:
            del tracked[old]


def track(predictor, frames: Sequence[np.ndarray], support_labels: np.ndarray, num_frames: int | None = None,
          precision: str = "auto") -> Iterator[tuple[int, list[int], torch.Tensor, tuple[int, int]]]:
    """Track every part of the support mask through frames, one pseudo-video.

    Parameters
    ----------
    predictor : SAM2VideoPredictor
    frames : sequence of numpy.ndarray, uint8, each (H_i, W_i, 3)
        frames[0] is the labelled support image.
    support_labels : numpy.ndarray, uint8, shape (H_0, W_0)
        0 = background, v > 0 = part v.
    num_frames : int or None
        Video length SAM 2 is told (see :func:`new_state`); only ``len(frames)`` are tracked.
    precision : str
        "auto" (bfloat16 autocast on CUDA, float32 elsewhere: the SST authors' setting),
        "float32" or "bfloat16".

    Yields
    ------
    frame_idx : int
    part_ids : list of int
        The parts tracked (those present in the support mask), in object order.
    logits : torch.Tensor, float32, shape (n_parts, h, w)
        Mask logits at the model's mask resolution (image_size / 4).
    size : (int, int)
        The frame's own (H, W).
    """
    parts = [int(v) for v in np.unique(support_labels) if v > 0]
    if not parts:
        raise ValueError("the support mask is empty: it labels no part")
    state = new_state(predictor, frames, num_frames)
    with autocast(predictor.device, precision):  # SAM 2's own methods run under inference mode
        for part in parts:
            predictor.add_new_mask(state, frame_idx=0, obj_id=part, mask=torch.from_numpy(support_labels == part))
    steps = predictor.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=len(frames) - 1)
    while True:
        with autocast(predictor.device, precision):  # entered per step: nothing leaks to the caller between frames
            step = next(steps, None)
        if step is None:
            return
        frame_idx, obj_ids, logits = step
        yield frame_idx, list(obj_ids), logits[:, 0].float(), state["images"].sizes[frame_idx]
        _drop_old_outputs(state, frame_idx)


def frame_masks(logits: torch.Tensor, part_ids: Sequence[int], size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each part's own mask on one frame, and the label image derived from them.

    Parameters
    ----------
    logits : torch.Tensor, float, shape (n_parts, h, w)
    part_ids : sequence of int, length n_parts
    size : (H, W)
        The frame's own size; logits are resized bilinearly (align_corners=False) before thresholding.

    Returns
    -------
    labels : numpy.ndarray, uint8, shape (H, W)
        The rule that makes one label per pixel: among the parts whose mask covers the pixel, the one with the
        highest logit (SAM 2's own ``non_overlap_masks`` rule); 0 where no mask does. So a pixel labelled p
        always lies in part p's mask.
    masks : numpy.ndarray, bool, shape (n_parts, H, W)
        Part k's own mask, logit > 0, as the SST authors keep it: masks may overlap.

    Examples
    --------
    Part 1 and part 2 both cover the middle pixel; part 2's logit there is higher.

    >>> logits = torch.tensor([[[2.0, 1.0, -1.0]], [[-1.0, 3.0, 1.0]]])
    >>> labels, masks = frame_masks(logits, [1, 2], (1, 3))
    >>> labels.tolist(), masks.astype(int).tolist()
    ([[1, 2, 2]], [[[1, 1, 0]], [[0, 1, 1]]])
    """
    resized = F.interpolate(logits[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    best, index = resized.max(0)
    ids = torch.tensor(list(part_ids), dtype=torch.uint8, device=resized.device)
    labels = torch.where(best > 0, ids[index], torch.zeros_like(index, dtype=torch.uint8))
    return labels.cpu().numpy(), (resized > 0).cpu().numpy()


class Frame(NamedTuple):
    """One frame of a species' pseudo-video, segmented (:func:`segment_frames`).

    Attributes
    ----------
    index : int
        The frame: 0 the support, then the queries in order.
    labels : numpy.ndarray, uint8, (H, W)
        The label image at the frame's own size (:func:`frame_masks`' rule); frame 0's is the support mask.
    masks : numpy.ndarray, bool, (P, H, W)
        Each part's own mask, along ``parts``; frame 0's are the support's parts.
    parts : tuple of int
        The parts tracked: those in the support mask, ascending.
    chunk : int
        The pseudo-video (``chunk_size``) the frame was tracked in.
    """

    index: int
    labels: np.ndarray
    masks: np.ndarray
    parts: tuple[int, ...]
    chunk: int


@dataclass
class Segmented:
    """One species' pseudo-video segmented, every frame at once (:func:`propagate`): ``labels``, ``masks`` and
    ``chunk_of`` per frame as :class:`Frame` has them, and the ``parts`` the masks are along."""

    labels: list[np.ndarray]
    masks: list[np.ndarray]
    parts: list[int]
    chunk_of: list[int]


def chunks(n_frames: int, chunk_size: int | None) -> list[list[int]]:
    """Frame indices of each pseudo-video: [0, queries...], at most ``chunk_size`` frames each.

    Parameters
    ----------
    n_frames : int
        Frames including the support frame 0.
    chunk_size : int or None
        None: one pseudo-video. Otherwise >= 2.

    Returns
    -------
    list of list of int
        Every chunk starts with 0 (the support); the queries 1..n-1 appear once each.
    """
    if chunk_size is None or chunk_size >= n_frames:
        return [list(range(n_frames))]
    if chunk_size < 2:
        raise ValueError(f"chunk_size must be >= 2 (the support and a query), got {chunk_size}")
    step = chunk_size - 1
    return [[0, *range(start, min(start + step, n_frames))] for start in range(1, n_frames, step)]


def segment_frames(predictor, frames: Sequence[np.ndarray], support_labels: np.ndarray, *,
                   chunk_size: int | None = None, precision: str = "auto") -> Iterator[Frame]:
    """Segment every frame of one species' pseudo-video, yielding each frame as soon as it is done, in order.

    Only one frame's full-size label image and masks are held at a time (the caller keeps what it needs of
    them), however many specimens the species has.

    Parameters
    ----------
    predictor : SAM2VideoPredictor
        From :func:`load_sam2`.
    frames : sequence of numpy.ndarray, uint8, each (H_i, W_i, 3)
        frames[0] is the labelled support image; any indexable works (frames are
        read when SAM 2 needs them).
    support_labels : numpy.ndarray, uint8, shape (H_0, W_0)
        0 = background, 1..K = parts.
    chunk_size : int or None
        Most frames per pseudo-video (support included); each chunk restarts from
        the support frame. None: one pseudo-video.
    precision : str
        See :func:`track`.

    Yields
    ------
    Frame
        Frames 0, 1, ..., len(frames) - 1.
    """
    parts = tuple(int(v) for v in np.unique(support_labels) if v > 0)
    if not parts:
        raise ValueError("the support mask is empty: it labels no part")
    for chunk, indices in enumerate(chunks(len(frames), chunk_size)):
        for local, part_ids, logits, size in track(predictor, Subset(frames, indices), support_labels,
                                                   num_frames=len(frames), precision=precision):
            frame = indices[local]
            if frame == 0 and support_labels.shape != size:
                raise ValueError(f"support mask {support_labels.shape} and support image {size} differ in size")
            if frame == 0 and chunk == 0:
                yield Frame(0, support_labels.astype(np.uint8), np.stack([support_labels == p for p in parts]),
                            parts, 0)
            elif frame > 0:
                yield Frame(frame, *frame_masks(logits, part_ids, size), parts, chunk)


def propagate(predictor, frames: Sequence[np.ndarray], support_labels: np.ndarray, *,
              chunk_size: int | None = None, precision: str = "auto") -> Segmented:
    """Every frame of :func:`segment_frames` at once (for a few frames: SAM 2 training's checks, tests).

    Returns
    -------
    Segmented
    """
    done = list(segment_frames(predictor, frames, support_labels, chunk_size=chunk_size, precision=precision))
    return Segmented([f.labels for f in done], [f.masks for f in done], list(done[0].parts),
                     [f.chunk for f in done])
