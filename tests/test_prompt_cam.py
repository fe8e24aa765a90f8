import json
import math
from pathlib import Path

import pytest
import timm
import torch

from traitpipe.explain.prompt_cam import PromptCAM, load_released
from traitpipe.jobs.models import load_prompt_cam
from traitpipe.store.cards import ModelCard, Source


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


REFERENCE = Path(__file__).parent / "data" / "prompt_cam"


def _reference_case(case, tmp_path):
    """The authors' tiny model of reference case ``case`` (tests/data/prompt_cam/make_reference.py), loaded
    through the job's own path: a classifier description, and their checkpoint file as trainer.py writes it."""
    reference = torch.load(REFERENCE / "reference.pt", weights_only=True)["cases"][case]
    c = reference["config"]
    description = tmp_path / "classifier.json"
    ModelCard("classifier", Source("random"), classes=[f"c{k}" for k in range(c["num_classes"])], architecture={
        "arch": "vit_tiny_patch16_224", "kwargs": {
            "img_size": c["img_size"], "patch_size": c["patch_size"], "embed_dim": c["embed_dim"], "depth": c["depth"],
            "num_heads": c["num_heads"], "init_values": c["init_values"]}}).write(description)
    model, _ = load_prompt_cam(None, description, REFERENCE / f"reference_case{case}_model.pt")
    return model.eval(), reference


@pytest.mark.parametrize("case", [0, 1, 2])  # 2 heads; 4 heads; 4 heads with LayerScale (as DINOv2)
def test_logits_maps_blur_and_ranking_match_the_authors_code(case, tmp_path):
    """Against the authors' VisionTransformerPETL, their blur (AttentionPETL: the target prompt's pre-softmax row
    set to 0) and their full greedy ranking (prune_and_plot_ranked_heads), run from their checkout."""
    model, reference = _reference_case(case, tmp_path)
    heads = model.num_heads
    for sample in reference["samples"]:
        x, true = sample["image"], torch.tensor([sample["true"]])
        with torch.no_grad():
            torch.testing.assert_close(model(x)[0], sample["logits"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.attention_maps(x)[0], sample["maps"], atol=1e-5, rtol=1e-5)
            for h in range(heads):  # head h blurred for the true class: its logit (the others do not move)
                removed = torch.zeros(1, heads, dtype=torch.bool)
                removed[0, h] = True
                torch.testing.assert_close(model.blurred_logit(x, true, removed)[0],
                                           sample["single_head_blurred_logits"][h, true[0]], atol=1e-5, rtol=1e-5)
        assert model.rank_heads(x, true)[0].tolist() == sample["full_ranking_most_to_least"]
        explained, found, _, _, _ = model.explain(x, true)  # the job explains the true class
        assert explained.item() == sample["true"] and found.item() == sample["predicted"]
        # the authors rank heads (basic_vis) only where the prediction is the true class
        assert (found == explained).item() == sample["basic_vis"]["branch"].startswith("ranked")


def test_the_authors_checkpoint_file_loads(tmp_path):
    """Their trainer.py saves {'model_state_dict': ...}: the job's loading path reads it."""
    reference = torch.load(REFERENCE / "reference_case0_model.pt", weights_only=True)
    assert list(reference) == ["model_state_dict"]
    model, _ = _reference_case(0, tmp_path)
    torch.testing.assert_close(model.prompts, reference["model_state_dict"]["vpt.prompt_embeddings"])
    state = {k: v for k, v in model.backbone.state_dict().items()}
    with pytest.raises(ValueError, match="no 'vpt.prompt_embeddings'"):
        load_released(model, {"head.weight": model.head.weight})
    with pytest.raises(ValueError, match="prompts of shape"):
        load_released(model, {**state, "vpt.prompt_embeddings": torch.zeros(1, 5, 16),
                              "head.weight": model.head.weight, "head.bias": model.head.bias})


def test_explain_serves_the_given_or_the_predicted_class():
    model = _model(0)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        target = model(x).argmax(1)
    ranking, probability = model.rank_heads_with_probabilities(x, target)
    with torch.no_grad():
        torch.testing.assert_close(probability[:, 0], model(x).softmax(1)[torch.arange(8), target])
    explained, predicted, maps, ranked, probabilities = model.explain(x)  # one pass serves the explain step
    assert torch.equal(explained, target) and torch.equal(predicted, target) and torch.equal(ranked, ranking)
    torch.testing.assert_close(probabilities, probability)
    torch.testing.assert_close(maps, model.attention_maps(x)[torch.arange(8), :, target])
    other = (target + 1) % model.num_classes  # a given class (the true one), -1 = the prediction
    given = torch.where(torch.arange(8) < 4, -1, other)
    explained, predicted, maps, ranked, probabilities = model.explain(x, given)
    want = torch.where(given < 0, target, other)
    assert torch.equal(explained, want) and torch.equal(predicted, target)
    assert torch.equal(ranked, model.rank_heads(x, want))
    torch.testing.assert_close(maps, model.attention_maps(x)[torch.arange(8), :, want])


def test_a_released_checkpoint_is_trained_on_and_explained_at_the_authors_normalisation(small_collection, tmp_path):
    """prompt_cam_train records a released checkpoint (the authors' file layout) with their normalisation (0.5
    mean and std, not the classifier's), and the prompt_cam job explains every image with it; what the job
    trains here it saves in their layout too."""
    import numpy as np
    import pandas as pd

    from traitpipe.config import canonical_json, load_config
    from traitpipe.jobs import classifier, prompt_cam, prompt_cam_train
    from traitpipe.jobs.images import ImageInputs, read_rows
    from traitpipe.models.classifier import build_classifier
    from traitpipe.store.maps import open_maps
    from conftest import ingest_shards, write_config

    species = sorted(pd.read_csv(small_collection / "manifest.csv")["species"].unique())
    tiny = {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}
    backbone, info = build_classifier("deit_tiny_patch16_224", len(species), kwargs=tiny)
    assert info["mean"] != [0.5] * 3
    torch.save(backbone.state_dict(), tmp_path / "classifier_in.pt")
    torch.manual_seed(1)
    released = PromptCAM(backbone, len(species))
    with torch.no_grad():  # attention that follows the pixels (random weights attend almost uniformly)
        released.prompts.normal_(0, 1.0)
        released.backbone.blocks[-1].attn.qkv.weight.mul_(4)
    state = {**released.backbone.state_dict(), "vpt.prompt_embeddings": released.prompts.detach(),
             "head.weight": released.head.weight.detach(), "head.bias": released.head.bias.detach()}
    torch.save({"model_state_dict": state}, tmp_path / "released.pt")
    config = write_config(tmp_path, small_collection, classifier={
        "arch": "deit_tiny_patch16_224", "input_size": 32, "kwargs": tiny, "checkpoint": str(tmp_path / "classifier_in.pt"),
        "classes": species, "train": {"enabled": False}},
        prompt_cam={"checkpoint": str(tmp_path / "released.pt"), "classes": species, "batch_size": 8},
        shard_size=len(species) * 5)  # one shard: each species' images
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(config)))
    images = ingest_shards(run_config, tmp_path)
    paths = {k: str(tmp_path / k) for k in ("classifier.pt", "classifier.json", "prompt_cam.pt", "prompt_cam.json",
                                            "maps.zarr", "heads.parquet")}
    classifier.main(["--config", str(run_config), "--images", *images, "--weights", paths["classifier.pt"],
                     "--description", paths["classifier.json"], "--evaluation", str(tmp_path / "e1.parquet"),
                     "--failures", str(tmp_path / "f1.parquet")])
    prompt_cam_train.main(["--config", str(run_config), "--images", *images, "--classifier", paths["classifier.pt"],
                           "--classifier-description", paths["classifier.json"], "--weights", paths["prompt_cam.pt"],
                           "--description", paths["prompt_cam.json"], "--evaluation", str(tmp_path / "e2.parquet"),
                           "--failures", str(tmp_path / "f2.parquet")])
    described = json.loads(Path(paths["prompt_cam.json"]).read_text())
    assert described["mean"] == described["std"] == [0.5] * 3
    assert described["source"]["kind"] == "file" and described["source"]["checkpoint"].endswith("released.pt")
    assert list(torch.load(paths["prompt_cam.pt"], weights_only=True)) == ["model_state_dict"]
    prompt_cam.main(["--config", str(run_config), "--images", images[0], "--weights", paths["prompt_cam.pt"],
                     "--description", paths["prompt_cam.json"], "--classifier", paths["classifier.pt"],
                     "--classifier-description", paths["classifier.json"], "--maps", paths["maps.zarr"],
                     "--heads", paths["heads.parquet"], "--failures", str(tmp_path / "f3.parquet")])
    stored = open_maps(paths["maps.zarr"])
    rows = read_rows(images[0])
    target = torch.tensor([species.index(name) for name in rows["species"]])

    def explained_at(mean, std):
        batch = torch.stack([ImageInputs(json.loads(run_config.read_text()), rows, 32, mean, std)[i]
                             for i in range(len(rows))])
        return released.eval().explain(batch, target)

    _, predicted, maps, _, _ = explained_at([0.5] * 3, [0.5] * 3)
    np.testing.assert_allclose(stored["cam"][:], maps.numpy(), atol=2e-4)  # float16 storage
    assert np.abs(stored["cam"][:] - explained_at(info["mean"], info["std"])[2].numpy()).max() > 2e-3
    # heads are ranked (as the authors rank them) only where the model predicts the true class
    ranked = pd.read_parquet(paths["heads.parquet"]).groupby("image_id", sort=False)["ranked"].agg(["all", "any"])
    assert (ranked["all"] == ranked["any"]).all()
    assert ranked.loc[rows["image_id"], "all"].tolist() == (predicted == target).tolist()
    assert 0 < (predicted == target).sum() < len(rows)  # both kinds of image are there
