"""Part interventions (traitpipe/explain/interventions.py): FunnyBirds' single deletion on SST's parts."""

import numpy as np
import pandas as pd
import pytest
import torch

from traitpipe.explain.interventions import background_colour, part_effects
from traitpipe.traits.evaluation import part_effect_scores
from traitpipe.traits.maps import input_masks, place_maps
from traitpipe.traits.species import effect_parts


class RedSpot(torch.nn.Module):
    """Two classes told apart by the mean red of rows 0-1 (a 'mark' on part 1); counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.calls, self.grad = 0, []

    def forward(self, x):
        self.calls += 1
        self.grad.append(torch.is_grad_enabled())
        red = x[:, 0, :2].mean(dim=(1, 2))
        return torch.stack([red, -red, torch.zeros_like(red)], dim=1)


def _images_and_masks():
    images = torch.full((2, 3, 4, 4), -1.0)  # background -1 (a light plain background, normalised)
    images[:, :, :2] = 0.5  # part 1: rows 0-1, red
    images[:, :, 2:, :2] = 0.2  # part 2: rows 2-3, left half
    masks = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    masks[:, 0, :2], masks[:, 1, 2:, :2] = True, True  # part 3 is absent
    return images, masks


def test_removing_the_part_the_model_reads_moves_its_answer_and_nothing_else_does():
    images, masks = _images_and_masks()
    model = RedSpot()
    effects = part_effects(model, images, masks, torch.tensor([0, 0]), torch.tensor([1, 1]), fill="background")
    assert model.calls == 1 + 3 and not any(model.grad)  # one batched pass per part, no backward
    assert torch.allclose(effects.delta_logit[:, 0], torch.tensor([-1.5, -1.5]))  # 0.5 -> the background's -1
    assert (effects.delta_logit[:, 1] == 0).all() and effects.delta_logit[:, 2].isnan().all()  # absent: NaN
    assert (effects.delta_margin[:, 0] < 0).all() and (effects.delta_probability[:, 0] < 0).all()
    assert torch.allclose(effects.target_logit, torch.tensor([0.5, 0.5]))


def test_the_two_fills_differ_by_what_they_put_in_the_part():
    images, masks = _images_and_masks()
    assert background_colour(images, masks).tolist() == [[-1.0] * 3] * 2
    mean = part_effects(RedSpot(), images, masks, torch.tensor([0, 0]), torch.tensor([1, 1]), fill="mean")
    assert torch.allclose(mean.delta_logit[:, 0], torch.tensor([-0.5, -0.5]))  # 0.5 -> the normalisation mean, 0
    with pytest.raises(ValueError, match="fill must be one of"):
        part_effects(RedSpot(), images, masks, torch.tensor([0, 0]), torch.tensor([1, 1]), fill="noise")


def test_input_masks_invert_place_maps():
    """A part mask brought from the canvas to the model's input lands where place_maps puts that input back."""
    canvas, size, transform = 32, (64, 32), np.array([0.5, 0, 8])  # a 64 x 32 image in columns 8..23
    labels = np.zeros((canvas, canvas), np.uint8)
    labels[4:12, 10:14] = 3
    mask = input_masks(labels, transform, size, [3, 5], 16)
    assert mask.shape == (2, 16, 16) and not mask[1].any()
    back = place_maps(mask[:1].astype(np.float32), transform, size, canvas)[0] > 0.5
    assert (back == (labels == 3)).mean() > 0.97


def test_a_map_agrees_with_the_effects_when_it_ranks_the_parts_as_their_removal_does():
    cam_parts = pd.DataFrame({"method": ["m"] * 6 + ["f"] * 6, "alpha": np.nan, "head": None, "rank": None,
                              "image_id": (["a"] * 3 + ["b"] * 3) * 2, "species": "s", "part_id": [1, 2, 3] * 4,
                              "mass_share": [0.6, 0.3, 0.1] * 2 + [0.1, 0.3, 0.6] * 2})
    effects = pd.DataFrame({"model": "c", "image_id": ["a"] * 3 + ["b"] * 3, "part_id": [1, 2, 3] * 2,
                            "delta_logit": [-3.0, -1.0, 0.5, -2.0, np.nan, 0.0]})  # b has no part 2
    scores = {(r["method"], r["metric"]): (r["value"], r["n"])
              for r in part_effect_scores(cam_parts, effects, {"m": "c", "f": "c"}, {"all": None})}
    assert scores[("m", "part_effect_spearman")] == (1.0, 1)  # b has two parts: no Spearman
    assert scores[("m", "part_effect_top1")] == (1.0, 2)
    assert scores[("f", "part_effect_spearman")] == (-1.0, 1) and scores[("f", "part_effect_top1")] == (0.0, 2)


def test_prompt_cams_top_head_is_one_map_whichever_head_it_is():
    cam_parts = pd.DataFrame({"method": "promptcam", "alpha": np.nan, "image_id": ["a"] * 6 + ["b"] * 6,
                              "species": "s", "head": [3] * 3 + [1] * 3 + [0] * 3 + [3] * 3,
                              "rank": [0] * 3 + [1] * 3 + [0] * 3 + [1] * 3, "part_id": [1, 2, 3] * 4,
                              "mass_share": [0.6, 0.3, 0.1] * 4})
    effects = pd.DataFrame({"model": "p", "image_id": ["a"] * 3 + ["b"] * 3, "part_id": [1, 2, 3] * 2,
                            "delta_logit": [-3.0, -1.0, 0.5] * 2})
    records = part_effect_scores(cam_parts, effects, {"promptcam": "p"}, {"all": None})
    assert [(r["metric"], r["level"], r["value"], r["n"]) for r in records] == [
        ("part_effect_spearman", None, 1.0, 2), ("part_effect_top1", None, 1.0, 2)]


def test_a_species_without_parts_to_remove_gets_no_answer_and_the_others_keep_theirs():
    effects = pd.DataFrame({"image_id": ["a", "a", "b", "b"], "species": ["s", "s", "t", "t"], "part_id": [1, 2] * 2,
                            "part": ["head", "wing"] * 2, "area_share": [0.0, 0.0, 0.1, 0.2],
                            "delta_margin": [np.nan, np.nan, -0.1, -0.3]})
    assert effect_parts(effects)[["species", "part"]].values.tolist() == [["t", "wing"]]
    assert effect_parts(effects[effects["species"] == "s"]).empty  # SST found no part in any image


def test_the_intact_pass_chooses_the_predicted_target_and_the_closest_class_as_cams_does():
    images, masks = _images_and_masks()
    model = RedSpot()
    effects = part_effects(model, images, masks, torch.tensor([-1, 1]))
    assert model.calls == 1 + 3  # the intact pass that chose them is the one the effects are measured from
    assert effects.target.tolist() == [0, 1] and effects.similar.tolist() == [2, 2]  # logits 0.5, -0.5, 0
