"""The SST round trip on a tracker whose masks are right, where the old single-video leak is visible."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from traitpipe.segment.finetune import round_trip_iou
from traitpipe.segment.sst import frame_masks, track


class ColourTracker:
    """SAM 2's video-predictor API on a tracker that segments by colour.

    Like SAM 2, it keeps frame 0 (the seeded frame) as a conditioning memory: each object's
    mean colour inside its frame-0 mask. On every frame it returns the pixels of that colour.
    """

    image_size, device = 128, torch.device("cpu")

    def _get_image_feature(self, state, frame_idx, batch_size):
        state["images"][frame_idx]

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        mask = F.interpolate(mask[None, None].float(), size=(self.image_size,) * 2, mode="nearest")[0, 0] > 0.5
        state.setdefault("seeds", OrderedDict())[obj_id] = mask

    def propagate_in_video(self, state, start_frame_idx=0, max_frame_num_to_track=None):
        seeds = state["seeds"]
        first = state["images"][0]
        colours = [first[:, mask].mean(1) for mask in seeds.values()]  # the conditioning memory
        for frame_idx in range(len(state["images"])):
            image = state["images"][frame_idx]
            logits = torch.stack([10 * (1.4 - (image - c[:, None, None]).norm(dim=0)) for c in colours])
            low = F.interpolate(logits[:, None], size=(state["video_height"],) * 2, mode="bilinear",
                                align_corners=False)
            yield frame_idx, list(seeds), low


def specimen(spot_at=None, colour=(220, 30, 30)):
    image = np.full((64, 64, 3), 128, np.uint8)
    if spot_at is not None:
        image[spot_at[0]:spot_at[0] + 16, spot_at[1]:spot_at[1] + 16] = colour
    return image


SUPPORT = specimen((8, 8))
LABELS = np.zeros((64, 64), np.uint8)
LABELS[8:24, 8:24] = 1


def single_video_round_trip(predictor, support, query, labels, part):
    """The old round trip: [support, query, support] as ONE pseudo-video (kept here to show the leak)."""
    truth = labels == part
    *_, (_, ids, logits, size) = track(predictor, [support, query, support], truth.astype(np.uint8) * part)
    back = frame_masks(logits, ids, size)[0] == part
    return float((back & truth).sum() / (back | truth).sum())


def test_the_round_trip_scores_a_query_with_the_part_far_above_one_without():
    tracker = ColourTracker()
    with_part = round_trip_iou(tracker, SUPPORT, specimen((40, 30)), LABELS, 1)  # the spot, moved
    blank = round_trip_iou(tracker, SUPPORT, specimen(), LABELS, 1)
    other = round_trip_iou(tracker, SUPPORT, specimen((8, 8), colour=(30, 30, 220)), LABELS, 1)  # another species
    assert with_part > 0.9
    assert blank == 0.0 and other == 0.0


def test_the_single_video_round_trip_leaks_the_answer_and_the_two_pass_one_does_not():
    tracker = ColourTracker()
    blank = specimen()
    assert single_video_round_trip(tracker, SUPPORT, blank, LABELS, 1) > 0.9  # frame 2 copies frame 0's memory
    assert round_trip_iou(tracker, SUPPORT, blank, LABELS, 1) == 0.0


def test_a_part_absent_from_the_support_has_no_score():
    assert np.isnan(round_trip_iou(ColourTracker(), SUPPORT, specimen((40, 30)), LABELS, 2))


@pytest.fixture(scope="module")
def sam2_tiny():
    from traitpipe.segment.sst import load_sam2

    torch.manual_seed(0)
    return load_sam2("sam2.1_hiera_t", None, device="cpu", image_size=128)


def test_the_differentiable_round_trip_sends_gradient_through_both_passes(sam2_tiny, monkeypatch):
    from traitpipe.segment import finetune

    finetune._drop_inference_caches(sam2_tiny)
    passes, seeded = [], finetune._seeded_logits

    def recorded(predictor, frames, seeds, precision):
        passes.append((frames, seeds, seeded(predictor, frames, seeds, precision)))
        return passes[-1][2]

    monkeypatch.setattr(finetune, "_seeded_logits", recorded)
    query = specimen((40, 30))
    back, parts = finetune.round_trip_logits(sam2_tiny, SUPPORT, query, LABELS, precision="float32")
    assert parts == [1] and back.shape == (1, 32, 32)
    (first_frames, first_seeds, forward), (second_frames, second_seeds, _) = passes
    assert first_frames[0] is SUPPORT and first_frames[1] is query
    assert second_frames[0] is query and second_frames[1] is SUPPORT  # a fresh video: the true mask is not in it
    assert torch.equal(first_seeds[1], torch.from_numpy(LABELS == 1))
    assert second_seeds[1].shape == (128, 128) and set(second_seeds[1].detach().unique().tolist()) <= {0.0, 1.0}
    grad, = torch.autograd.grad(back.sum(), forward)  # pass 2's output depends on pass 1's prediction
    assert grad.abs().sum() > 0
