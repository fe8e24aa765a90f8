"""A SAM 2 trained here: SAM 2's own training form on pseudo-videos, loadable like any checkpoint."""

import numpy as np
import pytest
import torch

from traitpipe.collection.synthetic import truth_videos
from traitpipe.config import ConfigError, validate_config
from traitpipe.segment.sst import config_file, load_sam2, propagate
from traitpipe.segment.train import train_sam2, video_datapoint


def test_a_pseudo_video_is_sam2s_training_batch(small_collection):
    frames, labels = truth_videos(small_collection)["Arar hirta"]
    batch = video_datapoint(frames[:3], labels[:3], [1, 2, 3], 64)
    assert batch.img_batch.shape == (3, 1, 3, 64, 64) and batch.masks.shape == (3, 3, 64, 64)
    assert batch.masks.dtype == torch.bool and torch.equal(batch.masks[1, 0], torch.from_numpy(labels[1] == 1))
    assert batch.obj_to_frame_idx[2].tolist() == [[2, 0]] * 3  # every object of frame 2 is in video 0


def test_train_then_load_like_any_checkpoint(small_collection, tmp_path):
    videos = truth_videos(small_collection)
    held = ["Phano vittata"]
    model, history = train_sam2(config_file("sam2_small"), 64, videos, held, list(range(1, 8)), epochs=2, frames=3,
                                lr=1e-3, weight_decay=0.1, validate_every=1, seed=0, progress=False)
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
    assert all(0 <= h["val_miou"] <= 1 for h in history)
    torch.save({"model": model.state_dict()}, tmp_path / "trained.pt")
    predictor = load_sam2("sam2_small", tmp_path / "trained.pt", image_size=64)  # strict: every key matches
    assert torch.equal(predictor.state_dict()["sam_mask_decoder.iou_token.weight"],
                       model.state_dict()["sam_mask_decoder.iou_token.weight"])
    frames, labels = videos["Phano vittata"]
    maps = propagate(predictor, frames[:3], labels[0].astype(np.uint8), precision="float32")
    assert [m.shape for m in maps] == [f.shape[:2] for f in frames[:3]]


def test_released_configs_build_in_training_form_too():
    from traitpipe.segment.sst import build_sam2

    model = build_sam2(config_file("sam2.1_hiera_t"), 64, "training.model.sam2.SAM2Train")  # a sam2 package config
    assert type(model).__name__ == "SAM2Train" and model.image_size == 64


def test_training_sam2_needs_true_part_masks():
    base = {"collection": {"root": "c", "manifest": "m.csv"}, "segment": {"checkpoint": "train"}}
    with pytest.raises(ConfigError, match="collection.columns.parts_truth"):
        validate_config(base)
    config = validate_config({**base, "collection": {**base["collection"], "columns": {"parts_truth": "truth"}}})
    assert config["segment"]["train"]["epochs"] > 0
