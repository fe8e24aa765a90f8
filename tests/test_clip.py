"""Finer-CAM on CLIP-like models: parity with pytorch-grad-cam, open_clip checkpoints, prompts, training."""

import json

import numpy as np
import pytest
import torch
from pytorch_grad_cam import FinerCAM, GradCAM, LayerCAM

from traitpipe.explain.cam import compute_cams, default_layers, token_grid
from traitpipe.explain.clip import check_prompts, prompt_classifier, train_clip
from traitpipe.models.clip import TINY, build_clip, clip_tokenizer, load_clip
from traitpipe.explain.prompts import concept_prompts, species_prompts

PROMPTS = ["a photo of Mily alba.", "a photo of Mily picta.", "a red spot on the forewings",
           "a blue spot on the hindwings", "a green spot on the abdomen"]
#: TINY at 64 px: an 8 x 8 token grid
CONFIG = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "image_size": 64}}
IMAGES = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _classifier(seed=0):
    torch.manual_seed(seed)
    clip = build_clip(CONFIG)
    return clip, prompt_classifier(clip, clip_tokenizer(CONFIG), PROMPTS)


def _drop_class_token(tensor):
    """The Finer-CAM authors' reshape for a CLIP ViT: drop the class token, tokens to an 8 x 8 map."""
    return tensor[:, 1:].reshape(tensor.shape[0], 8, 8, -1).permute(0, 3, 1, 2)


class ZeroShot(torch.nn.Module):
    """The reference classifier, from open_clip alone, in the shape of the Finer-CAM authors' ``ModifiedCLIP``
    (tutorial.ipynb: a module around the open_clip model, the image tower and a head): the head is open_clip's
    own zero-shot rule (``CLIP.forward``: unit image and text features, ``logit_scale.exp()``), the prompts
    encoded by ``encode_text`` on every call. No traitpipe code builds it."""

    def __init__(self, clip, tokens):
        super().__init__()
        self.clip, self.tokens = clip, tokens
        self.visual = clip.visual

    def forward(self, x):
        image, text, scale = self.clip(x, self.tokens)
        return scale * image @ text.T


def _reference(seed=0):
    import open_clip

    torch.manual_seed(seed)
    clip = open_clip.CLIP(**CONFIG).eval()
    return ZeroShot(clip, open_clip.SimpleTokenizer(context_length=16)(PROMPTS))


@pytest.mark.parametrize("method,reference", [("gradcam", GradCAM), ("layercam", LayerCAM)])
@pytest.mark.parametrize("alpha", [None, 0.0, 0.6, 1.0])
def test_maps_match_pytorch_grad_cam_on_open_clips_own_zero_shot_logits(method, reference, alpha):
    """traitpipe's classifier and maps against pytorch-grad-cam run the authors' way (the last block's ln_1, their
    reshape, FinerCAM around the base method) on a classifier built from open_clip alone: a pooling, feature
    normalisation, logit scale or prompt error on traitpipe's side shows in the logits and the maps."""
    _, model = _classifier()
    independent = _reference()
    layer = independent.visual.transformer.resblocks[-1].ln_1
    assert default_layers(model) == ["visual.transformer.resblocks.1.ln_1"]
    with torch.no_grad():
        torch.testing.assert_close(model(IMAGES), independent(IMAGES), atol=1e-5, rtol=1e-5)
    if alpha is None:
        expected = reference(independent, [layer], reshape_transform=_drop_class_token)(IMAGES, targets=None)
    else:
        expected = FinerCAM(independent, [layer], reshape_transform=_drop_class_token, base_method=reference)(
            IMAGES, alpha=alpha)
    ours = compute_cams(model, IMAGES, default_layers(model), method=method, alpha=alpha)
    assert ours.shape == (3, 64, 64)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4)
    assert token_grid(model, 65) == (1, 8, 8)


def test_the_text_is_embedded_once_and_similarities_stay_float32():
    clip, model = _classifier()
    with torch.no_grad():
        expected = model(IMAGES)
    assert model.text.shape == (5, 32) and not model.text.requires_grad
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # similarities stay float32 under autocast
        assert model(IMAGES).dtype == torch.float32
    with torch.no_grad():  # editing the text tower afterwards changes nothing: the prompts were embedded once
        clip.text_projection.mul_(2.0)
        torch.testing.assert_close(model(IMAGES), expected, atol=1e-5, rtol=1e-5)


def test_checkpoints_in_open_clip_layouts_reload(tmp_path):
    clip, model = _classifier(seed=4)
    with torch.no_grad():
        expected = model(IMAGES)
    plain = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), plain)
    # open_clip's training script saves {"epoch", "state_dict" (DistributedDataParallel: "module." names), ...}
    wrapped = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}},
               wrapped)
    folder = tmp_path / "hub"  # the Hugging Face Hub's layout, as imageomics/bioclip holds it
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG, "preprocess_cfg": {}}))
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    for checkpoint, arch in ((plain, CONFIG), (wrapped, CONFIG), (folder, None)):
        loaded, config, tokenizer = load_clip(str(checkpoint), arch)
        assert config["vision_cfg"] == CONFIG["vision_cfg"]
        with torch.no_grad():
            torch.testing.assert_close(prompt_classifier(loaded, tokenizer, PROMPTS)(IMAGES), expected)
    with pytest.raises(FileNotFoundError, match="no file, folder or hf-hub"):
        load_clip(str(tmp_path / "missing.pt"), CONFIG)
    (folder / "open_clip_pytorch_model.bin").unlink()  # open_clip alone would build a random model and only warn
    with pytest.raises(FileNotFoundError, match="needs open_clip_config.json and a weights file"):
        load_clip(str(folder), None)
    with pytest.raises(ValueError, match="nearest: ViT-B-16"):
        load_clip(None, "ViT-B-61")


@pytest.mark.parametrize("bad,message", [
    (["a red spot", ""], r"prompt 1 \(''\) is not a non-empty string"),
    (["a red spot", 3], r"prompt 1 \(3\) is not a non-empty string"),
    (["a red spot", "a blue spot", "a red spot"], "prompt 2 .* repeats prompt 0"),
    (["a red spot", "A Red  spot"], "prompt 1 .* repeats prompt 0 .* once tokenized"),
    (["a red spot", "spot " * 20], "prompt 1 .* longer than the text tower's 16 tokens"),
    ([], "no prompts")])
def test_a_bad_prompt_list_is_refused_naming_the_entry(bad, message):
    clip = build_clip(CONFIG)
    with pytest.raises(ValueError, match=message):
        prompt_classifier(clip, clip_tokenizer(CONFIG), bad)
    assert check_prompts(["a", "b"], clip_tokenizer(CONFIG)) == ["a", "b"]


def test_prompt_sets_from_the_taxonomy_and_the_concepts():
    taxa = {"Mily alba": ["Phaidae", "Mily"], "Ranora flava": ["Phaidae", "Ranora"]}
    species = species_prompts(taxa, "taxonomic", "a photo of {}.")
    assert species["texts"] == ["a photo of Phaidae Mily alba.", "a photo of Phaidae Ranora flava."]
    assert species["species_prompt"] == {"Mily alba": 0, "Ranora flava": 1}
    with pytest.raises(ValueError, match="common name for 'Mily alba'"):
        species_prompts(taxa, "common", "{}")
    common = species_prompts(taxa, "scientific_and_common", "{}", {"Mily alba": "white", "Ranora flava": "gold"})
    assert common["texts"][1] == "Ranora flava with common name gold"
    with pytest.raises(ValueError, match="no concept for 1 species: Ranora flava"):
        concept_prompts({"Mily alba": "a red spot"}, list(taxa))
    free = concept_prompts(["a red spot", "a blue spot"], list(taxa))
    assert free["labels"] == [None, None] and free["species_prompt"] == {}


def test_contrastive_training_learns_which_caption_fits():
    """Two kinds of image (a bright or a dark square in the corner) and their captions: a tiny CLIP trained on them
    picks each image's caption zero-shot, from prompts it embeds afterwards."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(32, 3, 32, 32, generator=generator) * 0.3
    labels = torch.arange(32) % 2
    images[labels == 0, :, :12, :12] += 2.0
    images[labels == 1, :, :12, :12] -= 2.0
    torch.manual_seed(0)
    clip, tokenizer = build_clip(TINY), clip_tokenizer(TINY)
    captions = [["a bright square", "a photo of Mily alba."], ["a dark square", "a photo of Mily picta."]]
    history = train_clip(clip, tokenizer, images, captions, labels, epochs=15, batch_size=16, lr=3e-3,
                         weight_decay=0.0, seed=0, device=torch.device("cpu"), progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    for prompts in (["a bright square", "a dark square"], ["a photo of Mily alba.", "a photo of Mily picta."]):
        with torch.no_grad():
            predicted = prompt_classifier(clip, tokenizer, prompts)(images).argmax(1)
        assert (predicted == labels).float().mean() >= 0.9


def test_the_jobs_embed_the_prompts_once_and_explain_each_set(small_collection, tmp_path):
    """clip_model loads a checkpoint in the Hub's layout and embeds both prompt sets; explain, given a set, predicts
    what that checkpoint predicts on the same pixels and explains each image's own prompt."""
    import pandas as pd
    import zarr

    from conftest import ingest_shards, write_config
    from traitpipe.config import canonical_json, load_config
    from traitpipe.jobs import clip_model, explain
    from traitpipe.jobs.images import load_pixels, read_rows
    from traitpipe.models.transforms import to_batch

    torch.manual_seed(0)
    original = build_clip(CONFIG)
    folder = tmp_path / "bioclip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG, "preprocess_cfg": {}}))
    torch.save(original.state_dict(), folder / "open_clip_pytorch_model.bin")
    settings = {"enabled": True, "checkpoint": str(folder), "prompts": {"concepts": "concepts.json"}, "pool": None,
                "methods": [{"name": "gradcam", "alphas": [None, 1.0]}], "batch_size": 8}  # the model's own pooling
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(write_config(tmp_path, small_collection, clip=settings))))
    images = ingest_shards(run_config, tmp_path / "tables")
    models = tmp_path / "models"
    clip_model.main(["--config", str(run_config), "--images", *images, "--concepts",
                     str(small_collection / "concepts.json"), "--weights", str(models / "clip.pt"),
                     "--description", str(models / "clip.json"), "--evaluation", str(tmp_path / "evaluation.parquet"),
                     "--failures", str(tmp_path / "failures.parquet")])
    description = json.loads((models / "clip.json").read_text())
    concepts = json.loads((small_collection / "concepts.json").read_text())
    assert sorted(description["extra"]["prompts"]) == ["concept", "species"] and description["random_weights"] is False
    assert description["input_size"] == 64
    rows = read_rows([images[0]])
    pixels, _, _ = load_pixels(json.loads(run_config.read_text()), rows)
    batch = to_batch(pixels, 64, description["mean"], description["std"])
    for name in ("species", "concept"):
        prompts = description["extra"]["prompts"][name]
        explain.main(["--config", str(run_config), "--method", "gradcam", "--prompts", name, "--images", images[0],
                      "--weights", str(models / "clip.pt"), "--description", str(models / "clip.json"),
                      "--maps", str(tmp_path / f"{name}.zarr"), "--cams", str(tmp_path / f"{name}.parquet"),
                      "--failures", str(tmp_path / f"f-{name}.parquet")])
        cams = pd.read_parquet(tmp_path / f"{name}.parquet").query("alpha.isnull()")
        with torch.no_grad():
            expected = prompt_classifier(original, clip_tokenizer(CONFIG), prompts["texts"])(batch).argmax(1)
        assert cams["predicted"].tolist() == expected.tolist()
        own = [prompts["texts"][prompts["species_prompt"][s]] for s in rows["species"]]
        assert cams["target_prompt"].tolist() == own and (cams["target_source"] == "true").all()
        maps = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")
        assert maps.attrs["method"] == f"clip-{name}-gradcam" and maps["cam"].shape == (len(rows), 2, 8, 8)
        assert maps.attrs["provenance"]["models"]["clip"]["random_weights"] is False
        # here every species carries its own concept, so a concept stands for its species too
        assert cams["target_species"].tolist() == rows["species"].tolist()
    assert set(cams["target_prompt"]) <= set(concepts.values()) and len(set(concepts.values())) == 4
    # clip.pool avg on the loaded model (the authors' tutorial): the stored tower pools as the model did
    run_config.write_text(canonical_json(load_config(write_config(tmp_path, small_collection,
                                                                  clip={**settings, "pool": "avg"}))))
    clip_model.main(["--config", str(run_config), "--images", *images, "--concepts",
                     str(small_collection / "concepts.json"), "--weights", str(models / "clip.pt"),
                     "--description", str(models / "clip.json"), "--evaluation", str(tmp_path / "evaluation.parquet"),
                     "--failures", str(tmp_path / "failures.parquet")])
    assert json.loads((models / "clip.json").read_text())["architecture"]["vision_cfg"]["pool_type"] == "avg"
    explain.main(["--config", str(run_config), "--method", "gradcam", "--prompts", "species", "--images", images[0],
                  "--weights", str(models / "clip.pt"), "--description", str(models / "clip.json"),
                  "--maps", str(tmp_path / "avg.zarr"), "--cams", str(tmp_path / "avg.parquet"),
                  "--failures", str(tmp_path / "f-avg.parquet")])
    original.visual.pool_type = "avg"
    prompts = description["extra"]["prompts"]["species"]
    with torch.no_grad():
        logits = prompt_classifier(original, clip_tokenizer(CONFIG), prompts["texts"])(batch)
    cams = pd.read_parquet(tmp_path / "avg.parquet").query("alpha.isnull()")
    assert cams["predicted"].tolist() == logits.argmax(1).tolist()


def test_a_clip_config_that_cannot_run_stops_before_any_work(small_collection, tmp_path):
    import pandas as pd

    from conftest import write_config
    from traitpipe.config import ConfigError, load_config
    from traitpipe.preflight import check_clip

    def config(**clip):
        return write_config(tmp_path, small_collection, clip={"enabled": True, **clip})

    with pytest.raises(ConfigError, match="neither species prompts nor concepts"):
        load_config(config(checkpoint="hf-hub:imageomics/bioclip", prompts={"species": None}))
    with pytest.raises(ConfigError, match="clip.model: clip.checkpoint 'train' needs the architecture"):
        load_config(config(checkpoint="train"))
    species = sorted(pd.read_csv(small_collection / "manifest.csv")["species"].unique())
    small_concepts = tmp_path / "few.json"
    small_concepts.write_text(json.dumps({species[0]: "a red spot"}))
    problems = check_clip(load_config(config(
        checkpoint=str(tmp_path / "missing.pt"), model=CONFIG, prompts={"concepts": str(small_concepts)},
        methods=[{"name": "gradcam", "layers": ["blocks.1.norm1"]}])), species)
    assert [p.split(":")[0] for p in problems] == ["clip.checkpoint", "clip.methods (gradcam).layers",
                                                  "clip.prompts.concepts"]
    assert "nearest names: visual.transformer.resblocks.1.ln_1" in problems[1] and "3 species" in problems[2]
    assert check_clip(load_config(config(checkpoint="train", model=CONFIG, prompts={"concepts": "concepts.json"})),
                      species) == []
