"""INTR: the authors' transformer reproduced, their checkpoint layout loaded, maps that are distributions."""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from traitpipe.explain.intr import INTR, from_authors, load_intr
from traitpipe.models.checkpoints import load_state_dict

REFERENCE = Path(__file__).parent / "data" / "intr" / "reference.pt"
TINY = {"backbone": "test_resnet", "d_model": 16, "nheads": 2, "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 32}


def test_the_decoder_gives_the_authors_logits_and_attention():
    # tests/data/intr/make_reference.py ran the authors' Transformer and sine encoding on a random feature map
    reference = torch.load(REFERENCE, weights_only=True)
    sizes = reference["sizes"]
    model = INTR(sizes["classes"], backbone="resnet10t", d_model=sizes["d_model"], nheads=sizes["nheads"],
                 enc_layers=sizes["enc_layers"], dec_layers=sizes["dec_layers"],
                 dim_feedforward=sizes["dim_feedforward"])
    model.input_proj = nn.Conv2d(sizes["channels"], sizes["d_model"], kernel_size=1)
    missing, unexpected = model.load_state_dict(reference["state"], strict=False)
    assert not unexpected and all(key.startswith("backbone.") for key in missing)  # every name is theirs
    with torch.no_grad():
        logits, maps = model.eval().decode(reference["features"], return_maps=True)
    torch.testing.assert_close(logits, reference["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps.flatten(-2), reference["attention"], atol=1e-6, rtol=1e-5)


def test_the_authors_torchvision_backbone_names_load_and_give_the_same_features(tmp_path):
    import torchvision

    resnet = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # random statistics, so that frozen batch norm is tested too
        for module in resnet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2)
    ours = INTR(3, **{**TINY, "backbone": "resnet18"}).state_dict()
    authors = {k: v for k, v in ours.items() if not k.startswith("backbone.")}
    authors.update({"backbone.0.body." + k: v for k, v in resnet.state_dict().items()
                    if not k.startswith("fc.") and not k.endswith("num_batches_tracked")})
    path = tmp_path / "checkpoint.pth"  # main.py's layout, its pickled arguments included
    torch.save({"model": authors, "optimizer": {}, "epoch": 139, "args": argparse.Namespace(lr=5e-5, nheads=2)}, path)
    model = load_intr(load_state_dict(path, key="model"), backbone="resnet18", nheads=2).eval()
    x = torch.randn(2, 3, 64, 64)
    body = nn.Sequential(*list(resnet.children())[:-2])  # conv1 ... layer4, as their IntermediateLayerGetter
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x)[-1], body(x))
    assert model.query_embed.weight.shape == (3, 16) and len(model.transformer.decoder.layers) == 2
    with pytest.raises(ValueError, match="do not fit backbone 'resnet10t'"):
        load_intr(authors, backbone="resnet10t", nheads=2)
    with pytest.raises(ValueError, match="not an INTR checkpoint"):
        from_authors(resnet.state_dict())


def test_maps_are_distributions_from_the_same_pass_as_the_logits():
    torch.manual_seed(0)
    model = INTR(4, **TINY).eval()
    x = torch.randn(3, 3, 96, 64)
    with torch.no_grad():
        logits, maps = model(x, return_maps=True)
        plain = model(x)
    assert logits.shape == (3, 4) and maps.shape == (3, 2, 4, 3, 2)  # (B, heads, C, H/32, W/32)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(3, 2, 4))
    torch.testing.assert_close(plain, logits)
    assert maps[:, 0].sub(maps[:, 1]).abs().max() > 1e-3  # heads differ: not one map repeated


def test_permuting_the_class_queries_permutes_the_logits_and_maps():
    torch.manual_seed(1)
    model = INTR(5, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    order = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        logits, maps = model(x, return_maps=True)
        model.query_embed.weight.copy_(model.query_embed.weight[order])
        permuted, permuted_maps = model(x, return_maps=True)
    torch.testing.assert_close(permuted, logits[:, order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted_maps, maps[:, :, order], atol=1e-6, rtol=1e-5)



def test_a_tiny_intr_trained_on_the_synthetic_collection_beats_chance(tmp_path):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from traitpipe.collection import synthesize
    from traitpipe.explain.intr import train_intr
    from traitpipe.models.transforms import to_batch

    root = synthesize(tmp_path / "c", n_species=4, per_species=10, size=64, seed=3)
    rows = pd.read_csv(root / "manifest.csv")
    pixels = [np.array(Image.open(root / path).convert("RGB")) for path in rows["path"]]
    images = to_batch(pixels, 128, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # a 4 x 4 feature map
    labels = torch.tensor(pd.factorize(rows["species"], sort=True)[0])
    val = torch.tensor(rows["specimen_id"].str[-1].astype(int).to_numpy() >= 6)  # 4 of 10 specimens per species
    torch.manual_seed(0)
    model = INTR(4, **{**TINY, "d_model": 32, "dim_feedforward": 64, "dropout": 0.0})
    history = train_intr(model, images[~val], labels[~val], epochs=30, lr=1e-3, backbone_lr=1e-3, lr_drop=20,
                         batch_size=4, val=(images[val], labels[val]), progress=False)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["val_accuracy"] >= 0.5  # chance: 0.25 (4 of 16); 8 of 16 or more by chance: p = 0.03


def test_the_presence_vector_starts_as_the_authors():
    """util/misc.py load_model: xavier-uniform weights (bound sqrt(6 / (d_model + 1))) and a zero bias; nn.Linear's
    own init would draw both within 1 / sqrt(d_model)."""
    torch.manual_seed(0)
    head = INTR(3, **{**TINY, "d_model": 256, "dim_feedforward": 32}).presence_vector
    assert torch.equal(head.bias, torch.zeros(1))
    bound = (6 / 257) ** 0.5
    assert head.weight.abs().max() <= bound and head.weight.abs().max() > 2 / 256 ** 0.5


def test_the_authors_param_groups_leave_the_stem_and_first_stage_untrained():
    from traitpipe.explain.intr import param_groups

    model = INTR(3, **{**TINY, "backbone": "resnet18"})
    names = {id(param): name for name, param in model.named_parameters()}
    groups = param_groups(model, 1e-5)
    rest, backbone = ([names[id(p)] for p in group["params"]] for group in groups)
    assert "lr" not in groups[0] and groups[1]["lr"] == 1e-5
    assert "query_embed.weight" in rest and not any(name.startswith("backbone.") for name in rest)
    assert "backbone.layer2.0.conv1.weight" in backbone
    assert not any(name.startswith(("backbone.conv1.", "backbone.layer1.")) for name in backbone)
    assert len(param_groups(model, 0)) == 1  # backbone_lr 0: the backbone frozen


def _authors_intr(tmp_path, collection, config=(), **intr):
    """A random INTR saved in the authors' checkpoint layout, a run config using it (``intr`` and ``config``
    override its settings), the shards' images tables, and ``intr_train`` run on it (it loads the checkpoint):
    (original model, run config, tables, models folder, species)."""
    from conftest import ingest_shards, write_config
    from traitpipe.config import canonical_json, load_config
    from traitpipe.jobs import intr_train

    species = sorted(pd.read_csv(collection / "manifest.csv")["species"].unique())
    torch.manual_seed(0)
    original = INTR(len(species), **TINY).eval()
    authors = {("backbone.0.body." + k[len("backbone."):] if k.startswith("backbone.") else k): v
               for k, v in original.state_dict().items()}
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"model": authors, "epoch": 139, "args": argparse.Namespace(num_queries=len(species))}, checkpoint)
    settings = {**TINY, "enabled": True, "checkpoint": str(checkpoint), "input_size": 64, "batch_size": 8, **intr}  # no
    # class list: their file carries none, so the sorted species are assumed (with a warning), as for a classifier
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(write_config(tmp_path, collection, intr=settings, **dict(config)))))
    images = ingest_shards(run_config, tmp_path / "tables")
    models = tmp_path / "models"
    intr_train.main(["--config", str(run_config), "--images", *images, "--weights", str(models / "intr.pt"),
                     "--description", str(models / "intr.json"), "--evaluation", str(tmp_path / "evaluation.parquet"),
                     "--failures", str(tmp_path / "failures.parquet")])
    return original, run_config, images, models, species


def _intr_job(run_config, images, models, out):
    from traitpipe.jobs import intr

    intr.main(["--config", str(run_config), "--images", images, "--weights", str(models / "intr.pt"),
               "--description", str(models / "intr.json"), "--maps", str(out / "maps.zarr"),
               "--cams", str(out / "cams.parquet"), "--failures", str(out / "failures.parquet")])


def test_the_jobs_load_a_checkpoint_in_the_authors_layout_and_map_every_image(small_collection, tmp_path):
    import json

    import zarr

    from traitpipe.jobs.images import load_pixels, read_rows
    from traitpipe.jobs.intr_train import MEAN, STD
    from traitpipe.models.transforms import to_batch

    original, run_config, images, models, species = _authors_intr(tmp_path, small_collection)
    checkpoint = tmp_path / "checkpoint.pth"
    description = json.loads((models / "intr.json").read_text())
    assert description["architecture"] == {"backbone": "test_resnet", "nheads": 2, "num_classes": 4, "d_model": 16,
                                   "enc_layers": 1, "dec_layers": 2, "dim_feedforward": 32}
    assert description["classes"] == species and description["source"]["checkpoint"] == str(checkpoint)
    _intr_job(run_config, images[0], models, tmp_path)
    cams = pd.read_parquet(tmp_path / "cams.parquet")
    rows = read_rows([images[0]])
    pixels, _, _ = load_pixels(json.loads(run_config.read_text()), rows)
    with torch.no_grad():  # the checkpoint's own model on the same pixels: the same predictions
        expected = original(to_batch(pixels, 64, MEAN, STD)).argmax(1).tolist()
    assert cams["image_id"].tolist() == rows["image_id"].tolist() and cams["predicted"].tolist() == expected
    assert (cams["target_species"] == rows["species"]).all() and (cams["target_source"] == "true").all()
    maps = zarr.open_group(str(tmp_path / "maps.zarr"), mode="r")
    assert maps["cam"].shape == (len(rows), 2, 2, 2) and maps.attrs["method"] == "intr"
    np.testing.assert_allclose(maps["cam"][:].astype(np.float32).sum((-2, -1)), 1.0, atol=5e-3)


def test_a_shard_job_reads_each_image_once_and_leaves_out_one_that_breaks(small_collection, tmp_path, monkeypatch):
    from traitpipe.collection.images import ImageError
    from traitpipe.jobs.images import ImageInputs, read_rows
    from traitpipe.store.maps import open_maps

    _, run_config, images, models, _ = _authors_intr(tmp_path, small_collection, {"loader": {"workers": 0}},
                                                     batch_size=3)  # reads in this process, where they are counted
    rows = read_rows([images[0]])
    whole = tmp_path / "whole"
    _intr_job(run_config, images[0], models, whole)
    victim = rows["image_id"].iloc[1]  # in the first of two batches: the rows after it move
    reads = pd.Series(0, index=rows["image_id"])
    read = ImageInputs.pixels

    def counted(self, i):
        reads[self.ids[i]] += 1
        if self.ids[i] == victim:
            raise ImageError("changed since ingest (test)")
        return read(self, i)

    monkeypatch.setattr(ImageInputs, "pixels", counted)
    broken = tmp_path / "broken"
    _intr_job(run_config, images[0], models, broken)
    assert (reads == 1).all() and len(rows) == 5  # one read per image, the broken one's too
    kept = (rows["image_id"] != victim).to_numpy()
    maps, expected = open_maps(broken / "maps.zarr"), open_maps(whole / "maps.zarr")
    assert maps["image_id"][:].tolist() == rows["image_id"][kept].tolist()
    np.testing.assert_array_equal(maps["cam"][:], expected["cam"][:][kept])  # each kept image's own maps
    cams, failures = pd.read_parquet(broken / "cams.parquet"), pd.read_parquet(broken / "failures.parquet")
    assert cams.drop(columns="run_id").equals(
        pd.read_parquet(whole / "cams.parquet").drop(columns="run_id")[kept].reset_index(drop=True))
    assert failures["image_id"].tolist() == [victim] and failures["reason"].tolist() == ["changed since ingest (test)"]


def test_a_config_names_what_intr_cannot_use():
    from traitpipe.config import ConfigError, validate_config
    from traitpipe.preflight import check_intr

    base = {"collection": {"root": ".", "manifest": "m.csv"}}
    config = validate_config({**base, "intr": {"enabled": True, "backbone": "test_resnet", "d_model": 6, "nheads": 2}})
    assert check_intr(config) == ["intr.d_model: 6 is not a multiple of 4 (the sine encoding gives y and x half of "
                                  "it each, in sine-cosine pairs)"]
    config["intr"].update(d_model=16, nheads=3)
    assert check_intr(config) == ["intr.nheads: 3 heads do not divide intr.d_model 16"]
    config["intr"].update(nheads=2, backbone="test_vit")
    assert check_intr(config) == ["intr.backbone: INTR's backbone must end at stride 32; test_vit's last feature "
                                  "map has stride 16"]
    config["intr"].update(backbone="test_resnet")
    assert check_intr(config) == []
    with pytest.raises(ConfigError, match="intr.checkpoint: a local INTR checkpoint file"):
        validate_config({**base, "intr": {"checkpoint": "hf-hub:imageomics/intr"}})
