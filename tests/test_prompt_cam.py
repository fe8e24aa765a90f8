import math

import pytest
import timm
import torch

from traitpipe.explain.prompt_cam import PromptCAM, greedy_rank_heads, load_released


def _model(seed=0, reg_tokens=1, init_values=None):
    """A small random Prompt-CAM whose last-block heads matter (moderate logits, strong attention)."""
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, embed_dim=48, num_heads=6,
                            num_classes=5, reg_tokens=reg_tokens, init_values=init_values)
    model = PromptCAM(vit, 5).eval()
    with torch.no_grad():
        model.prompts.normal_(0, 1.0)
        model.head.weight.normal_(0, 0.2)
        model.backbone.blocks[-1].attn.qkv.weight.mul_(3)
        model.backbone.blocks[-1].attn.proj.weight.mul_(8)
    return model


def test_shapes_init_and_frozen_backbone():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=3, embed_dim=48, num_heads=6)
    model = PromptCAM(vit, 7)
    assert model.prompts.shape == (3, 7, 48) and model.head.weight.shape == (1, 48)
    bound = math.sqrt(6 / (3 * 16 * 16 + 48))
    assert model.prompts.abs().max() <= bound
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompts", "head.weight", "head.bias"}


@pytest.mark.parametrize("init_values", [None, 0.5])  # 0.5: LayerScale, as in DINOv2
def test_forward_is_the_block_forward_and_maps_are_raw_attention(init_values):
    model = _model(init_values=init_values)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.last_block_input(x)
        assert tokens.shape == (3, 5 + 2 + 4, 48)  # prompts, class and register token, 2x2 patches
        reference = model.head(model.backbone.norm(model.backbone.blocks[-1](tokens)[:, :5]))[..., 0]
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
        maps = model.attention_maps(x)
    assert maps.shape == (3, 6, 5, 2, 2) and (maps >= 0).all() and (maps.sum((-1, -2)) < 1).all()


def test_blurring_a_head_changes_only_its_class():
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    target = torch.tensor([1, 3])
    removed = torch.zeros(2, 6, dtype=torch.bool)
    removed[:, 2] = True
    with torch.no_grad():
        full = model(x)
        blurred = model.blurred_logit(x, target, removed)
        untouched = model.blurred_logit(x, target, torch.zeros(2, 6, dtype=torch.bool))
    torch.testing.assert_close(untouched, full[torch.arange(2), target])
    assert (blurred - full[torch.arange(2), target]).abs().min() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cheap_ranking_matches_the_greedy_full_forward_procedure(seed):
    model = _model(seed)
    x = torch.randn(8, 3, 32, 32)
    target = model(x).argmax(1)
    ranking = model.rank_heads(x, target)
    assert ranking.shape == (8, 6) and (ranking.sort(1).values == torch.arange(6)).all()
    assert torch.equal(ranking, greedy_rank_heads(model, x, target))
    _, probability = model.rank_heads_with_probabilities(x, target)
    torch.testing.assert_close(probability[:, 0], model(x).softmax(1)[torch.arange(8), target])
    predicted, maps, ranked, probabilities = model.explain(x)  # one pass serves the explain step
    assert torch.equal(predicted, target) and torch.equal(ranked, ranking)
    torch.testing.assert_close(probabilities, probability)
    torch.testing.assert_close(maps, model.attention_maps(x)[torch.arange(8), :, target])
    other = (target + 1) % model.num_classes  # a given class (the true one), -1 = the prediction
    given = torch.where(torch.arange(8) < 4, -1, other)
    explained, maps, ranked, probabilities = model.explain(x, given)
    want = torch.where(given < 0, target, other)
    assert torch.equal(explained, want) and torch.equal(ranked, model.rank_heads(x, want))
    torch.testing.assert_close(maps, model.attention_maps(x)[torch.arange(8), :, want])


def test_released_checkpoint_layout_loads():
    source, target = _model(0), _model(1)
    state = {k: v for k, v in source.backbone.state_dict().items()}
    state.update({"vpt.prompt_embeddings": source.prompts.detach(), "head.weight": source.head.weight.detach(),
                  "head.bias": source.head.bias.detach()})
    load_released(target, state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))
    with pytest.raises(ValueError, match="no 'vpt.prompt_embeddings'"):
        load_released(target, {"head.weight": state["head.weight"]})
    with pytest.raises(ValueError, match="prompts of shape"):
        load_released(target, {**state, "vpt.prompt_embeddings": torch.zeros(1, 5, 48)})
