"""SST on a random-weight SAM 2.1 tiny at image_size 128."""

import numpy as np
import pytest
import torch
from PIL import Image

from traitpipe.collection.synthetic import render_specimen
from traitpipe.segment.parts import check_support_mask, from_canvas, part_statistics, to_canvas
from traitpipe.segment.sst import chunks, frame_masks, load_sam2, propagate


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=128)


@pytest.fixture(scope="module")
def species(small_collection):
    """Frames of one species (support first) and its support mask, read back from JPEG as SAM 2 would."""
    import pandas as pd

    manifest = pd.read_csv(small_collection / "manifest.csv", keep_default_na=False)
    rows = manifest[manifest["species"] == manifest["species"].iloc[0]]
    frames = [np.array(Image.open(small_collection / p)) for p in rows["path"]]
    support = np.array(Image.open(small_collection / rows["mask"].iloc[0]))
    return frames, support


def test_each_parts_own_mask_is_sam2s_per_object_output_and_parts_overlap(predictor, species, tmp_path):
    """Against SAM 2 driven directly from its own JPEG folder route: each part's mask is that object's
    logits > 0 (the SST authors' propagate_masks), so masks overlap; the label image takes, where masks
    overlap, the object SAM 2 itself keeps with non_overlap_masks on."""
    frames, support = species
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i}.jpg", quality=95)
    decoded = [np.array(Image.open(tmp_path / f"{i}.jpg")) for i in range(len(frames))]

    def plain(non_overlap):
        predictor.non_overlap_masks = non_overlap
        try:
            state = predictor.init_state(str(tmp_path))  # SAM 2's own folder route
            for part in np.unique(support)[1:]:
                predictor.add_new_mask(state, frame_idx=0, obj_id=int(part), mask=support == part)
            return {i: (ids, (logits[:, 0] > 0).numpy()) for i, ids, logits in predictor.propagate_in_video(state)}
        finally:
            predictor.non_overlap_masks = False

    per_object, exclusive = plain(False), plain(True)
    ours = propagate(predictor, decoded, support)
    assert ours.parts == list(range(1, 8)) and len(ours.masks) == len(frames)
    overlapping = 0
    for i in range(1, len(frames)):
        ids, masks = per_object[i]
        assert list(ids) == ours.parts and ours.masks[i].dtype == bool
        np.testing.assert_array_equal(ours.masks[i], masks)
        overlapping += int((masks.sum(0) > 1).sum())
        ids, kept = exclusive[i]  # at most one object per pixel: the label image
        expected = np.zeros(frames[i].shape[:2], np.uint8)
        for k, part in enumerate(ids):
            expected[kept[k]] = part
        np.testing.assert_array_equal(ours.labels[i], expected)
        assert all(masks[k][ours.labels[i] == part].all() for k, part in enumerate(ids))
    assert overlapping > 0  # the test sees masks that overlap


def test_part_iou_is_scored_on_each_parts_own_mask(predictor, species):
    """SST's score against the truth counts a pixel for every part whose mask covers it, not for the label
    image's one part: part 2's mask covers part 1's true pixels too."""
    from traitpipe.segment.train import video_overlaps

    frames, support = species
    truths = [support] * (len(frames) - 1)
    inter, union = video_overlaps(predictor, frames, support, truths, [1, 2], precision="float32")
    segmented = propagate(predictor, frames, support, precision="float32")
    for t in range(1, len(frames)):
        for k, part in enumerate([1, 2]):
            mask = segmented.masks[t][part - 1]
            assert inter[t - 1, k] == (mask & (support == part)).sum()
            assert union[t - 1, k] == (mask | (support == part)).sum()
        label = segmented.labels[t]
        assert union[t - 1].tolist() != [((label == p) | (support == p)).sum() for p in (1, 2)]


def test_frame_zero_is_the_support_and_every_part_is_tracked(predictor, species):
    frames, support = species
    maps = propagate(predictor, frames, support).labels
    np.testing.assert_array_equal(maps[0], support)
    assert set(np.unique(support)) == set(range(8))  # seven parts and background
    assert all(set(np.unique(m)) <= set(range(8)) for m in maps)


def test_each_map_has_its_frames_own_size(predictor, species):
    frames, support = species
    other = np.array(Image.fromarray(frames[1]).resize((80, 48)))
    segmented = propagate(predictor, [frames[0], other, frames[2]], support)
    assert segmented.labels[1].shape == (48, 80) and segmented.labels[2].shape == frames[2].shape[:2]
    assert segmented.masks[1].shape == (7, 48, 80)


def test_chunked_runs_restart_from_the_support(predictor, species):
    frames, support = species
    long = frames + frames[1:] + frames[1:]  # 13 frames
    assert chunks(13, 6) == [[0, 1, 2, 3, 4, 5], [0, 6, 7, 8, 9, 10], [0, 11, 12]]
    whole = propagate(predictor, long, support).labels
    chunked = propagate(predictor, long, support, chunk_size=6)
    parts = chunked.labels
    assert chunked.chunk_of == [0] * 6 + [1] * 5 + [2] * 2
    for i in range(6):  # the first chunk is the start of the long run, exactly
        np.testing.assert_array_equal(parts[i], whole[i])
    # each chunk starts again from the support: what the first chunk saw cannot reach the others
    blanked = [long[0]] + [np.full_like(f, 255) for f in long[1:6]] + long[6:]
    again = propagate(predictor, blanked, support, chunk_size=6).labels
    for i in range(6, 13):
        np.testing.assert_array_equal(again[i], parts[i])


def test_a_run_longer_than_the_memory_window_drops_old_outputs_and_changes_nothing(predictor, species, monkeypatch):
    from traitpipe.segment import sst

    frames, support = species
    support = np.where(np.isin(support, [1, 4]), support, 0).astype(np.uint8)  # two parts: a quicker run
    long = frames + frames[1:] * 4  # 21 frames, longer than KEEP_FRAMES = 16
    kept = []
    drop = sst._drop_old_outputs

    def counting(state, frame_idx):
        drop(state, frame_idx)
        kept.append(max(len(o["non_cond_frame_outputs"]) for o in state["output_dict_per_obj"].values()))

    monkeypatch.setattr(sst, "_drop_old_outputs", counting)
    ours = propagate(predictor, long, support).labels
    assert len(kept) == len(long) and max(kept) == sst.KEEP_FRAMES and kept[-1] == sst.KEEP_FRAMES
    state = sst.new_state(predictor, long)  # the same run, every output kept
    for part in (1, 4):
        predictor.add_new_mask(state, frame_idx=0, obj_id=part, mask=torch.from_numpy(support == part))
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
        if frame_idx:
            np.testing.assert_array_equal(ours[frame_idx], frame_masks(logits[:, 0], obj_ids,
                                                                       long[frame_idx].shape[:2])[0])
    assert len(state["output_dict_per_obj"][0]["non_cond_frame_outputs"]) == len(long) - 1


def test_empty_support_mask_is_an_error(predictor, species):
    frames, support = species
    with pytest.raises(ValueError, match="empty"):
        propagate(predictor, frames, np.zeros_like(support))


def test_support_mask_checks():
    parts = {1: "head", 2: "thorax"}
    mask = np.zeros((10, 20), np.uint8)
    mask[2:4, 2:6] = 1
    with pytest.raises(ValueError, match=r"reference mask m.png is 10x20 \(HxW\) but image i.jpg is 20x40: .*never "
                                         r"stretched"):
        check_support_mask(mask, parts, "m.png", (20, 40), image="i.jpg")
    # an image stored 10x20 and shown rotated (EXIF 6) is 20x10: a mask of either size is accepted
    shown = check_support_mask(mask, parts, "m.png", (20, 10), stored_size=(10, 20), orientation=6)
    np.testing.assert_array_equal(shown, np.rot90(mask, -1))  # rotated as the image is
    np.testing.assert_array_equal(check_support_mask(shown, parts, "m.png", (20, 10), stored_size=(10, 20),
                                                     orientation=6), shown)
    with pytest.raises(ValueError, match=r"is 20x20 \(HxW\) but image i.jpg is 20x10, stored 10x20 before EXIF "
                                         r"orientation 6"):
        check_support_mask(np.pad(mask, ((0, 10), (0, 0))), parts, "m.png", (20, 10), stored_size=(10, 20),
                           orientation=6, image="i.jpg")
    mask[5, 5] = 9
    with pytest.raises(ValueError, match=r"reference mask m.png has labels \[9\] that are not declared parts"):
        check_support_mask(mask, parts, "m.png", (10, 20))
    with pytest.raises(ValueError, match="reference mask e.png is empty"):
        check_support_mask(np.zeros((4, 4), np.uint8), parts, "e.png", (4, 4))


def test_part_statistics_and_canvas_round_trip():
    look_image, labels, _ = render_specimen(_look(), 96)
    rows = part_statistics(labels, {1: "head", 2: "thorax", 9: "tail"})
    head, tail = rows[0], rows[2]
    ys, xs = np.nonzero(labels == 1)
    assert head["area"] == len(xs) and head["x0"] == xs.min() and head["y1"] == ys.max() + 1
    assert abs(head["cx"] - xs.mean()) < 1e-9 and tail["area"] == 0 and tail["x0"] == -1
    assert abs(sum(r["fraction"] for r in part_statistics(labels, {v: str(v) for v in range(1, 8)})) - 1) < 1e-9
    wide = np.repeat(labels, 2, axis=1)  # 96 x 192
    placed, transform = to_canvas(wide, 64)
    assert placed.shape == (64, 64) and transform.tolist() == [pytest.approx(1 / 3), 16, 0]
    back = from_canvas(placed, transform, wide.shape)
    assert back.shape == wide.shape and (back == wide).mean() > 0.95


def _look():
    from traitpipe.collection.synthetic import _look_from_traits

    return _look_from_traits(np.zeros(27), ("forewing", 0.1, 0.1, (1.0, 0.0, 0.0)))


def test_finetuning_lowers_the_round_trip_loss_and_tunes_only_the_named_modules(species):
    from traitpipe.segment.finetune import finetune, round_trip_iou

    frames, support = species
    torch.manual_seed(0)
    model = load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=128)
    encoder = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.sam_mask_decoder.state_dict().items()}
    memory = {k: v.clone() for k, v in model.memory_attention.state_dict().items()}
    tuning = finetune(model, [(frames[0], support, frames[1:3])], steps=6, lr=1e-4, progress=False)
    losses = tuning["losses"]
    assert len(losses) == 6 and losses[-1] < losses[0] and tuning["kept_step"] == 6 and not tuning["checks"]
    for frozen, before in ((model.image_encoder, encoder), (model.sam_mask_decoder, decoder)):  # the default:
        assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())  # memory attention only
    assert any(not torch.equal(v, model.memory_attention.state_dict()[k]) for k, v in memory.items())
    assert np.isnan(round_trip_iou(model, frames[0], frames[1], np.where(support == 4, 0, support), 4))


def test_the_guard_keeps_the_weights_with_the_lowest_round_trip_loss_on_set_aside_queries(species):
    from traitpipe.segment.finetune import finetune, round_trip_loss

    frames, support = species
    torch.manual_seed(0)
    model = load_sam2("sam2_small", None, device="cpu", image_size=128)  # small: the guard is what is tested
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checks = [(frames[0], support, frames[3])]
    both = ("sam_mask_decoder", "memory_attention")  # the decoder too: a high rate then surely wrecks it
    untuned = round_trip_loss(model, frames[0], frames[3], support, precision="float32").item()
    # a rate that wrecks the decoder: every step raises the set-aside loss, so none of it is kept
    tuning = finetune(model, [(frames[0], support, frames[1:3])], steps=4, lr=0.5, checks=checks, check_every=2,
                      modules=both, progress=False, precision="float32")
    assert [c["step"] for c in tuning["checks"]] == [0, 2, 4]
    assert tuning["checks"][0]["loss"] == pytest.approx(untuned)
    assert min(c["loss"] for c in tuning["checks"][1:]) > untuned and tuning["kept_step"] == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # a gentle rate that lowers it: the lowest measurement's weights are the ones left in the model
    tuning = finetune(model, [(frames[0], support, frames[1:3])], steps=4, lr=1e-4, checks=checks, check_every=2,
                      modules=both, progress=False, precision="float32")
    best = min(tuning["checks"], key=lambda c: c["loss"])
    assert best["step"] > 0 and tuning["kept_step"] == best["step"]
    kept = round_trip_loss(model, frames[0], frames[3], support, precision="float32").item()
    assert kept == pytest.approx(best["loss"], rel=1e-5)


def test_local_checkpoint_files_load(predictor, species, tmp_path):
    from traitpipe.segment.sst import config_file

    assert config_file("sam2.1_hiera_t") == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert config_file("sam2_hiera_l") == "configs/sam2/sam2_hiera_l.yaml"
    torch.save({"model": predictor.state_dict()}, tmp_path / "sam2.pt")  # SAM 2's released layout
    loaded = load_sam2("sam2.1_hiera_t", tmp_path / "sam2.pt", device="cpu", image_size=128)
    frames, support = species
    for a, b in zip(propagate(loaded, frames[:3], support).labels, propagate(predictor, frames[:3], support).labels):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="neither a local file nor a known Hugging Face id"):
        load_sam2("sam2.1_hiera_t", tmp_path / "missing.pt", device="cpu", image_size=128)
    from traitpipe.models.checkpoints import CheckpointError

    data = (tmp_path / "sam2.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 3])  # a download that stopped
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, tmp_path / "other.pt")
    torch.save({"model": {"no_such.weight": torch.zeros(1)}}, tmp_path / "foreign.pt")
    for name, message in (("cut.pt", "is corrupt, truncated or not a torch checkpoint"),
                          ("other.pt", "does not fit the config sam2.1_hiera_t: size mismatch for "
                                       "image_encoder.trunk.pos_embed"),
                          ("foreign.pt", "does not fit the config sam2.1_hiera_t: missing \\[")):
        with pytest.raises(CheckpointError, match=message) as refused:
            load_sam2("sam2.1_hiera_t", tmp_path / name, device="cpu", image_size=128)
        assert "weights_only" not in str(refused.value)
    with pytest.raises(ValueError, match="multiple of 32"):
        load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=100)
