import torch
from torch import nn

from traitpipe.explain.faithfulness import faithfulness_drop, top_fraction_mask


class TopLeftModel(nn.Module):
    """Class 0's logit is the mean brightness of the top-left quadrant; class 1's is constant."""

    def forward(self, x):
        score = x[:, :, :8, :8].mean((1, 2, 3)) * 10
        return torch.stack([score, torch.zeros_like(score)], 1)


def test_mask_covers_the_fraction():
    maps = torch.rand(3, 10, 10)
    mask = top_fraction_mask(maps, 0.05)
    assert mask.sum((1, 2)).tolist() == [5, 5, 5]
    assert (maps[mask].view(3, 5).min(1).values >= maps.flatten(1).kthvalue(96, 1).values).all()


def test_a_map_on_what_the_model_uses_drops_more():
    images = torch.ones(2, 3, 16, 16)
    target = torch.zeros(2, dtype=torch.long)
    right = torch.zeros(2, 16, 16)
    right[:, :8, :8] = 1
    wrong = torch.zeros(2, 16, 16)
    wrong[:, 8:, 8:] = 1
    model = TopLeftModel()
    good = faithfulness_drop(model, images, right, target, fraction=0.25)
    bad = faithfulness_drop(model, images, wrong, target, fraction=0.25)
    assert (good > 0.49).all() and bad.abs().max() < 1e-6  # p: 0.99995 -> 0.5 when the quadrant is hidden
    small = faithfulness_drop(model, images, right[:, ::2, ::2], target, fraction=0.25)  # low-res map is resized
    torch.testing.assert_close(small, good)
