import os
import tempfile

import numpy as np
import pytest
import torch

from traitpipe.models.checkpoints import CheckpointError, load_state_dict, sha256_file
from traitpipe.models.classes import carried_classes
from traitpipe.models.classifier import build_classifier, normalisation
from traitpipe.jobs.devices import resolve_device
from traitpipe.models.training import split_by_specimen, train_classifier

TINY = {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}


def test_checkpoint_round_trip_and_provenance(tmp_path):
    torch.manual_seed(0)
    model, info = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    assert info["random_weights"] and info["source"] == "random"
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again, info = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY, source=tmp_path / "w.pt")
    assert not info["random_weights"] and info["sha256"] == sha256_file(tmp_path / "w.pt")
    assert info["source"] == "file" and info["mean"] == [0.5] * 3  # the ViT's own normalisation
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again(x), model(x))
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "train.pt")  # a training checkpoint
    assert load_state_dict(tmp_path / "train.pt").keys() == model.state_dict().keys()


def test_bad_checkpoints_are_refused(tmp_path):
    model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    torch.save(model, tmp_path / "object.pt")  # a pickled model object, not a state dict
    with pytest.raises(CheckpointError, match=r"not a plain state dict: .*\(timm\.models\.vision_transformer\."
                                              r"VisionTransformer\)") as refused:
        load_state_dict(tmp_path / "object.pt")
    assert "weights_only" not in str(refused.value)  # never a hint to load it unsafely
    torch.save(model.state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    for name, content in (("truncated.pt", data[:len(data) // 2]), ("garbage.pt", b"not a checkpoint at all")):
        (tmp_path / name).write_bytes(content)
        for reader in (load_state_dict, carried_classes):
            with pytest.raises(CheckpointError, match="is corrupt, truncated or not a torch checkpoint") as refused:
                reader(tmp_path / name)
            assert "weights_only" not in str(refused.value)
    torch.save({"a": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="is not a state dict"):
        load_state_dict(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        build_classifier("vit_tiny_patch16_224", 5, kwargs=TINY, source=tmp_path / "w.pt")
    fresh, _ = build_classifier("vit_tiny_patch16_224", 5, kwargs=TINY, source=tmp_path / "w.pt", new_head=True)
    assert fresh.get_classifier().out_features == 5
    with pytest.raises(ValueError, match="unknown timm architecture"):
        build_classifier("vit_nonexistent_thing", 3)


def test_split_keeps_specimens_together_and_is_seeded():
    specimens = np.repeat([f"s{i}" for i in range(20)], 2)
    labels = np.repeat(np.arange(4), 10)
    held = split_by_specimen(specimens, labels, 0.25, seed=0)
    assert (held == split_by_specimen(specimens, labels, 0.25, seed=0)).all()
    assert all(len(set(held[specimens == s])) == 1 for s in specimens)
    assert [held[labels == c].sum() for c in range(4)] == [2, 2, 2, 2]  # 1 of 5 specimens (2 images) per class


def test_training_learns_a_separable_task():
    torch.manual_seed(0)
    labels = torch.arange(3).repeat(8)
    colour = torch.nn.functional.one_hot(labels, 3).float() * 2 - 1  # each class has its own colour
    images = torch.randn(24, 3, 32, 32) * 0.1 + colour[:, :, None, None]
    model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    history = train_classifier(model, images, labels, epochs=10, batch_size=8, lr=3e-3, weight_decay=0.0,
                               linear_probe=False, seed=0, device=resolve_device("cpu"), val=(images, labels),
                               progress=False)
    assert history[-1]["val_accuracy"] == 1.0 and history[-1]["loss"] < history[0]["loss"]
    frozen = model.blocks[0].attn.qkv.weight.detach().clone()
    train_classifier(model, images, labels, epochs=1, batch_size=8, lr=1e-2, weight_decay=0.0, linear_probe=True,
                     seed=0, device=resolve_device("cpu"), progress=False)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, frozen)  # a linear probe leaves the backbone alone


@pytest.mark.parametrize("name", ["dino", "dinov2"])
def test_prompt_cams_schedule_is_the_authors_per_epoch_cosine(name):
    """The rate of every epoch as the Prompt-CAM authors' engine/trainer.py sets it (their CUB configurations,
    replayed in tests/data/prompt_cam/make_reference.py): epochs 0 and 1 at warmup_lr_init, a linear warm-up,
    then a cosine over all the epochs down to lr_min."""
    from pathlib import Path

    reference = torch.load(Path(__file__).parent / "data" / "prompt_cam" / "reference.pt",
                           weights_only=True)["lr_schedule"][name]
    c = reference["config"]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    images, labels = torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 0, 1])
    history = train_classifier(model, images, labels, epochs=c["epoch"], batch_size=2, lr=c["lr"],
                               weight_decay=c["wd"], linear_probe=False, seed=0, device=resolve_device("cpu"),
                               warmup_epochs=c["warmup_epoch"], lr_min=c["lr_min"], warmup_lr_init=c["warmup_lr_init"],
                               optimizer="sgd", trainable=list(model.parameters()), progress=False)
    np.testing.assert_allclose([h["lr"] for h in history], reference["lr_per_epoch"], rtol=1e-6, atol=1e-12)


def test_drop_last_and_clipping_over_every_parameter(monkeypatch):
    """INTR's recipe: the last partial batch is dropped (10 images in batches of 4: two batches an epoch), and
    the clipped norm covers every parameter, frozen ones included (their --finetune), which still do not move."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
    model[1].requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    sizes, clipped = [], []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    original = nn.utils.clip_grad_norm_
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda params, norm: clipped.append(list(params)) or
                        original(clipped[-1], norm))
    images, labels = torch.randn(10, 3, 2, 2), torch.arange(10) % 2
    common = dict(epochs=2, batch_size=4, lr=0.1, weight_decay=0.0, linear_probe=False, seed=0,
                  device=resolve_device("cpu"), warmup_epochs=0, trainable=list(model[3].parameters()), clip_norm=0.1,
                  progress=False)
    train_classifier(model, images, labels, drop_last=True, clip_every_parameter=True, **common)
    assert sizes == [4, 4, 4, 4]
    assert {id(p) for p in clipped[0]} == {id(p) for p in model.parameters()}
    torch.testing.assert_close(model[1].weight, frozen)  # clipped over, never stepped
    assert not model[1].weight.requires_grad  # its flag restored
    sizes.clear(), clipped.clear()
    train_classifier(model, images, labels, **common)
    assert sizes == [4, 4, 2, 4, 4, 2] and len(clipped[0]) == 2
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        train_classifier(model, images, labels, drop_last=True, **{**common, "batch_size": 16})


def test_device_auto_and_clear_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_jobs_on_one_machine_take_different_gpus(tmp_path, monkeypatch):
    """Two GPU jobs on a machine with two GPUs never share one; a third waits until one is free."""
    import fcntl
    import threading

    from traitpipe.jobs import devices as device_module

    def hold(index):  # another job's claim: the same lock, from another open file
        handle = open(tmp_path / f"gpu-{index}.lock", "a")
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle

    monkeypatch.setattr(device_module, "_CLAIMS", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(os, "getuid", lambda: 0)
    (tmp_path / "traitpipe-gpus-0").mkdir()
    other = open(tmp_path / "traitpipe-gpus-0" / "gpu-0.lock", "a")
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)  # the claim lasts the process
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit device is taken as given

    monkeypatch.setattr(device_module, "_CLAIMS", {})
    first, second = hold(0), hold(1)
    claimed = []
    waiter = threading.Thread(target=lambda: claimed.append(device_module.claim_gpu(2, tmp_path, poll_s=0.05)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not claimed  # both GPUs taken: it waits
    second.close()  # that job ended
    waiter.join(5)
    assert claimed == [1]
    first.close()
    other.close()


def test_crop_augmentation_keeps_the_size():
    from traitpipe.models.transforms import augment

    batch = torch.randn(4, 3, 28, 28)
    out = augment(batch, torch.Generator().manual_seed(0), crop_scale=240 / 224)
    assert out.shape == batch.shape and not torch.equal(out, batch)


def _hub_cache(home, repo, model, pretrained_cfg):
    """A Hugging Face cache holding one timm model as the Hub serves it (config.json + model.safetensors)."""
    import json

    from safetensors.torch import save_file

    snapshot = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text(json.dumps({
        "architecture": "vit_tiny_patch16_224", "num_classes": 3, "model_args": TINY,
        "pretrained_cfg": pretrained_cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, snapshot / "model.safetensors")


def test_named_sources_load_offline_from_the_hugging_face_cache_with_their_own_normalisation(tmp_path, monkeypatch):
    """hf-hub:<repo> and timm (the arch's pretrained tag) go through the HF cache: no network with HF_HUB_OFFLINE."""
    torch.manual_seed(1)
    model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    cfg = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "input_size": [3, 32, 32], "num_classes": 3}
    _hub_cache(tmp_path, "lab/tiny-beetles", model, cfg)
    _hub_cache(tmp_path, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", model, cfg)
    import huggingface_hub.constants as hub  # what HF_HOME=... HF_HUB_OFFLINE=1 set when the library loads

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    x = torch.randn(2, 3, 32, 32)
    loaded, info = build_classifier("ignored", 3, kwargs=TINY, source="hf-hub:lab/tiny-beetles")
    torch.testing.assert_close(loaded(x), model(x))  # the cached weights, not fresh ones
    assert info["source"] == "hf-hub" and not info["random_weights"]
    assert info["mean"] == [0.1, 0.2, 0.3] and info["std"] == [0.4, 0.5, 0.6]  # the model's own, not a default
    # timm's tag for the arch: its registry's config (1000 ImageNet classes, so a new head for 3 species)
    loaded, info = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY, source="timm")
    torch.testing.assert_close(loaded.forward_features(x), model.forward_features(x))
    assert info["source"] == "timm" and info["mean"] == [0.5] * 3 and not info["random_weights"]
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(Exception, match="offline|cache|connect"):  # never the network
        build_classifier("ignored", 3, kwargs=TINY, source="hf-hub:lab/tiny-beetles")


def test_a_folder_in_the_hubs_layout_loads_without_cache_or_network(tmp_path, monkeypatch):
    """classifier.checkpoint naming a folder (config.json and model.safetensors, as the Hub serves a timm model):
    its architecture, weights and normalisation, read from disk alone."""
    from traitpipe.models.checkpoints import CheckpointError

    torch.manual_seed(2)
    model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    cfg = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "input_size": [3, 32, 32], "num_classes": 3}
    _hub_cache(tmp_path, "lab/tiny-beetles", model, cfg)
    folder = next((tmp_path / "hub").rglob("snapshots/*"))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty"))  # nothing from a cache either
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    loaded, info = build_classifier("ignored", 3, kwargs=TINY, source=folder)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert info["source"] == "local-dir" and info["sha256"] == sha256_file(folder / "model.safetensors")
    assert info["mean"] == [0.1, 0.2, 0.3] and not info["random_weights"]
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="needs config.json and model.safetensors"):
        build_classifier("ignored", 3, kwargs=TINY, source=folder)


def test_normalisation_comes_from_the_architecture():
    import timm

    assert normalisation(timm.create_model("resnet18", pretrained=False)) == (
        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert normalisation(timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)) == ([0.5] * 3, [0.5] * 3)


def test_a_checkpoint_whose_sha256_differs_from_the_configs_stops_its_job_before_anything_is_written(tmp_path):
    from traitpipe.config import ConfigError, validate_config
    from traitpipe.jobs import classifier
    from traitpipe.store.run import write_run_config

    model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    good, bad = sha256_file(tmp_path / "w.pt"), "0" * 64
    outputs = {name: tmp_path / "out" / name for name in ("w.pt", "w.json", "eval.parquet", "failures.parquet")}

    def run(sha256):
        config = validate_config({"collection": {"root": str(tmp_path), "manifest": "m.csv"},
                                  "classifier": {"checkpoint": str(tmp_path / "w.pt"), "checkpoint_sha256": sha256}})
        write_run_config(tmp_path / "config.json", config)
        classifier.main(["--config", str(tmp_path / "config.json"), "--images", str(tmp_path / "none.parquet"),
                         "--weights", str(outputs["w.pt"]), "--description", str(outputs["w.json"]),
                         "--evaluation", str(outputs["eval.parquet"]), "--failures", str(outputs["failures.parquet"])])

    with pytest.raises(SystemExit, match=f"has sha256 {good}, not the {bad} that classifier.checkpoint_sha256 names"):
        run(bad)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="none.parquet"):  # the right sha256: on to reading the images
        run(good)
    with pytest.raises(ConfigError, match="classifier.checkpoint_sha256: checks a local checkpoint file, and "
                                          "classifier.checkpoint is 'timm'"):
        validate_config({"collection": {"root": ".", "manifest": "m.csv"},
                         "classifier": {"checkpoint": "timm", "checkpoint_sha256": good}})


def test_mean_patch_pooling_is_a_linear_head_on_the_mean_of_the_normalised_patch_tokens():
    """classifier.pool mean_patch: the Finer-CAM authors' form (DINOv2's x_norm_patchtokens.mean(dim=1), then a
    linear layer); token: the class token."""
    import timm
    import torch

    from traitpipe.models.classifier import pool_kwargs

    kwargs = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 16, "num_heads": 2}
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    for pool in ("mean_patch", "token"):
        model = timm.create_model("vit_tiny_patch16_224", num_classes=3,
                                  **kwargs, **pool_kwargs("vit_tiny_patch16_224", pool, kwargs=kwargs)).eval()
        with torch.no_grad():
            tokens = model.forward_features(images)  # every token through the blocks and the final norm
            pooled = tokens[:, model.num_prefix_tokens:].mean(1) if pool == "mean_patch" else tokens[:, 0]
            assert torch.allclose(model(images), model.head(pooled), atol=1e-5), pool
