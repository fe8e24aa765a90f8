"""A SAM 2 trained here: SAM 2's own training form on pseudo-videos, loadable like any checkpoint."""

import numpy as np
import pytest
import torch

from traitpipe.collection.synthetic import truth_videos
from traitpipe.config import ConfigError, validate_config
from traitpipe.segment.sst import config_file, load_sam2, propagate
from traitpipe.segment.train import (augment_video, build_trainable, param_groups, pretrain_encoder, train_sam2,
                                     video_datapoint)


def test_pseudo_videos_are_sam2s_training_batch(small_collection):
    videos = truth_videos(small_collection)
    (f0, l0), (f1, l1) = videos["Arar hirta"], videos["Phano vittata"]
    batch = video_datapoint([(f0[:3], l0[:3]), (f1[:3], l1[:3])], [1, 2, 3], 64)
    assert batch.img_batch.shape == (3, 2, 3, 64, 64) and batch.masks.shape == (3, 6, 64, 64)
    assert batch.masks.dtype == torch.bool
    assert torch.equal(batch.masks[1, 0], torch.from_numpy(l0[1] == 1))  # video 0's part 1 on frame 1
    assert torch.equal(batch.masks[2, 4], torch.from_numpy(l1[2] == 2))  # video 1's part 2 on frame 2
    assert batch.obj_to_frame_idx[2].tolist() == [[2, 0]] * 3 + [[2, 1]] * 3  # (frame, video) of each object
    with pytest.raises(ValueError, match="same number of frames"):
        video_datapoint([(f0[:3], l0[:3]), (f1[:2], l1[:2])], [1], 64)


def test_a_video_gets_one_look_and_its_labels_follow_its_pixels(small_collection):
    frames, labels = truth_videos(small_collection)["Arar hirta"]
    for seed in range(6):  # flips on some seeds, not on others
        looks, moved = augment_video([frames[0], frames[0]], [labels[0], labels[0]], np.random.default_rng(seed))
        assert np.array_equal(looks[0], looks[1]) and np.array_equal(moved[0], moved[1])  # one look per video
        flipped = not np.array_equal(moved[0], labels[0])
        assert np.array_equal(moved[0], labels[0][:, ::-1] if flipped else labels[0])
        # the specimen's pixels are where its labels are: the background is light, the specimen darker
        assert looks[0][moved[0] == 0].mean() > looks[0][moved[0] > 0].mean() + 40
    _, kept = augment_video([frames[0]] * 8, [labels[0]] * 8, np.random.default_rng(0), flip=False)
    assert all(np.array_equal(k, labels[0]) for k in kept)


def test_pretraining_teaches_the_models_own_encoder(small_collection):
    videos = truth_videos(small_collection)
    model, fresh = (build_trainable(config_file("sam2_small"), 64, seed=0) for _ in range(2))
    losses = pretrain_encoder(model.image_encoder, videos, sorted(videos), 8, 64, steps=40, lr=2e-3,
                              weight_decay=0.1, rng=np.random.default_rng(0), batch=8, progress=False)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    name = "image_encoder.trunk.blocks.0.mlp.layers.0.weight"
    assert not torch.equal(model.state_dict()[name], fresh.state_dict()[name])  # trained in place, not a copy


def test_a_frozen_encoder_gets_no_gradients_and_norms_no_decay():
    model = build_trainable(config_file("sam2_small"), 64, seed=0)
    groups = param_groups(model, 0.1, 1e-3, encoder_lr=0)
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    grouped = {id(p) for g in groups for p in g["params"]}
    assert not grouped & {id(p) for p in model.image_encoder.parameters()}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.memory_attention.norm.weight) in no_decay
    assert id(model.memory_attention.layers[0].linear1.weight) not in no_decay


def test_train_then_load_like_any_checkpoint(small_collection, tmp_path):
    videos = truth_videos(small_collection)
    held = ["Phano vittata"]
    model, history, pretrain = train_sam2(config_file("sam2_small"), 64, videos, held, list(range(1, 8)), epochs=2,
                                          frames=3, batch=2, lr=1e-3, weight_decay=0.1, validate_every=1, seed=0,
                                          pretrain_steps=2, encoder_lr=0, progress=False)
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
    assert len(pretrain) == 2
    assert all(0 <= h["val_miou"] <= 1 for h in history)
    torch.save({"model": model.state_dict()}, tmp_path / "trained.pt")
    predictor = load_sam2("sam2_small", tmp_path / "trained.pt", image_size=64)  # strict: every key matches
    assert torch.equal(predictor.state_dict()["sam_mask_decoder.iou_token.weight"],
                       model.state_dict()["sam_mask_decoder.iou_token.weight"])
    frames, labels = videos["Phano vittata"]
    maps = propagate(predictor, frames[:3], labels[0].astype(np.uint8), precision="float32").labels
    assert [m.shape for m in maps] == [f.shape[:2] for f in frames[:3]]



def test_a_run_stuck_on_the_plateau_starts_again_from_the_pretrained_encoder(small_collection):
    args = (config_file("sam2_small"), 64, truth_videos(small_collection), ["Phano vittata"], list(range(1, 8)))
    kwargs = dict(epochs=2, frames=3, batch=2, lr=1e-3, weight_decay=0.1, validate_every=2, seed=0, pretrain_steps=2,
                  encoder_lr=0, progress=False)
    plain, plain_history, _ = train_sam2(*args, **kwargs)
    unstuck, unstuck_history, _ = train_sam2(*args, **kwargs, restarts=2, restart_at=1, restart_below=-1.0)
    # a run that is not stuck trains exactly as without restarts: the check (epoch 1, no validation there) draws
    # nothing random
    assert [(h["loss"], h.get("val_miou")) for h in unstuck_history] == [(h["loss"], h.get("val_miou"))
                                                                          for h in plain_history]
    assert "fit_miou" in unstuck_history[0] and unstuck_history[-1]["attempt"] == 0
    stuck, history, _ = train_sam2(*args, **kwargs, restarts=2, restart_at=1, restart_below=1.01)  # always stuck
    assert [(h["attempt"], h["epoch"]) for h in history] == [(0, 1), (1, 1), (2, 1), (2, 2)]
    assert "fit_miou" not in history[-1]  # the last attempt is kept whatever it reaches
    kept, fresh = stuck.state_dict(), plain.state_dict()
    encoder = [key for key in kept if key.startswith("image_encoder.")]
    assert all(torch.equal(kept[key], fresh[key]) for key in encoder)  # the same pretrained (frozen) encoder
    assert not torch.equal(kept["sam_mask_decoder.iou_token.weight"], fresh["sam_mask_decoder.iou_token.weight"])

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
