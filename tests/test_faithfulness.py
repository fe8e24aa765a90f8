import math

import pandas as pd
import pytest
import torch
from torch import nn

from traitpipe.explain.cam import similar_classes
from traitpipe.explain.faithfulness import confidence_drop, top_fraction_mask
from traitpipe.traits.evaluation import faithfulness_scores


class QuadrantModel(nn.Module):
    """Class 0 sees the top-left and the top-right quadrant, class 1 only the top-right, class 2 is constant.

    Classes 0 and 1 share the top-right quadrant; only the top-left tells class 0 from class 1.
    """

    def forward(self, x):
        left, right = x[:, :, :8, :8].mean((1, 2, 3)), x[:, :, :8, 8:].mean((1, 2, 3))
        return torch.stack([4 * (left + right), 4 * right + 3.0, torch.zeros_like(left)], 1)


def quadrant(y, x):
    maps = torch.zeros(2, 16, 16)
    maps[:, y:y + 8, x:x + 8] = 1
    return maps


IMAGES, TARGET, SIMILAR = torch.ones(2, 3, 16, 16), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)


def test_mask_covers_the_fraction():
    maps = torch.rand(3, 10, 10)
    mask = top_fraction_mask(maps, 0.05)
    assert mask.sum((1, 2)).tolist() == [5, 5, 5]
    assert (maps[mask].view(3, 5).min(1).values >= maps.flatten(1).kthvalue(96, 1).values).all()


def test_the_similar_class_is_the_closest_logit():
    model = QuadrantModel()
    assert similar_classes(model(IMAGES), TARGET, 1)[:, 0].tolist() == [1, 1]  # logits 8, 7, 0


def test_relative_drop_rewards_the_discriminative_part_not_the_shared_one():
    model = QuadrantModel()
    discriminative = confidence_drop(model, IMAGES, quadrant(0, 0), TARGET, SIMILAR, fraction=0.25)
    shared = confidence_drop(model, IMAGES, quadrant(0, 8), TARGET, SIMILAR, fraction=0.25)
    # by hand: logits (8, 7, 0) -> (4, 7, 0) after hiding the left quadrant, -> (4, 3, 0) after the right one
    p = torch.tensor([8.0, 7.0, 0.0]).softmax(0)
    p_left, p_right = torch.tensor([4.0, 7.0, 0.0]).softmax(0), torch.tensor([4.0, 3.0, 0.0]).softmax(0)
    torch.testing.assert_close(discriminative.relative_drop, ((p[0] - p_left[0]) - (p[1] - p_left[1])).repeat(2))
    torch.testing.assert_close(shared.relative_drop, ((p[0] - p_right[0]) - (p[1] - p_right[1])).repeat(2))
    assert (discriminative.relative_drop > 0.9).all() and (shared.relative_drop.abs() < 0.1).all()
    # the target-only drop is kept beside it, under its own name
    torch.testing.assert_close(discriminative.target_drop_ratio, (1 - p_left[0] / p[0]).repeat(2))
    torch.testing.assert_close(shared.target_drop_ratio, (1 - p_right[0] / p[0]).repeat(2))


def test_an_all_zero_or_constant_map_masks_nothing():
    model = QuadrantModel()
    maps = torch.stack([torch.zeros(16, 16), torch.full((16, 16), 0.5)])
    drop = confidence_drop(model, IMAGES, maps, TARGET, SIMILAR, fraction=0.25)
    assert all(math.isnan(v) for v in drop.relative_drop.tolist() + drop.target_drop_ratio.tolist())
    assert not drop.p_target.isnan().any()  # the unmasked probabilities are still known


def test_low_resolution_maps_are_resized_before_ranking():
    model = QuadrantModel()
    full = confidence_drop(model, IMAGES, quadrant(0, 0), TARGET, SIMILAR, fraction=0.25)
    small = confidence_drop(model, IMAGES, quadrant(0, 0)[:, ::2, ::2], TARGET, SIMILAR, fraction=0.25)
    torch.testing.assert_close(small.relative_drop, full.relative_drop)


def test_methods_are_compared_over_the_images_every_map_ranks():
    """Finer-CAM's map of image 1 is all zero (no RD): the comparison leaves image 1 out for Grad-CAM too, and
    each method's own mean, over the images it ranks, is kept beside it with its own n."""
    model = QuadrantModel()
    finer, gradcam_maps = quadrant(0, 0), torch.stack([quadrant(0, 0)[0], quadrant(0, 8)[1]])
    finer[1] = 0
    scored = {None: confidence_drop(model, IMAGES, gradcam_maps, TARGET, SIMILAR, fraction=0.25),
              1.0: confidence_drop(model, IMAGES, finer, TARGET, SIMILAR, fraction=0.25)}
    rows = pd.DataFrame([{"method": "gradcam", "alpha": alpha, "image_id": f"i{i}", "species": "s",
                          "mask_fraction": 0.25, "relative_drop": drop.relative_drop[i].item()}
                         for alpha, drop in scored.items() for i in range(2)])
    records = {(r["alpha"], r["metric"]): (r["value"], r["n"]) for r in faithfulness_scores(rows, {"all": None})}
    gradcam = scored[None].relative_drop  # high on image 0, near 0 on image 1
    assert gradcam[0] - gradcam[1] > 0.5
    assert records[(None, "relative_drop@0.25")] == (pytest.approx(gradcam[0].item()), 1)
    assert records[(None, "relative_drop_own@0.25")] == (pytest.approx(gradcam.mean().item()), 2)
    assert records[(1.0, "relative_drop@0.25")][1] == records[(1.0, "relative_drop_own@0.25")][1] == 1
