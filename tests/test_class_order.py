"""External checkpoints carry or are given their class order; a mismatch with the species is an error."""

import json

import pandas as pd
import pytest
import torch

from traitpipe.config import canonical_json, load_config
from traitpipe.models.classes import carried_classes, match_classes, read_class_list
from traitpipe.models.classifier import build_classifier, head_outputs

from conftest import ingest_shards, write_config

TINY = {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}


def test_class_lists_come_from_the_config_a_file_or_the_checkpoint(tmp_path):
    (tmp_path / "classes.txt").write_text("b\na\n\n")
    (tmp_path / "classes.json").write_text('["c", "a"]')
    assert read_class_list("classes.txt", tmp_path) == ["b", "a"]
    assert read_class_list(str(tmp_path / "classes.json")) == ["c", "a"]
    assert read_class_list(["x", "y"]) == ["x", "y"] and read_class_list(None) is None
    with pytest.raises(ValueError, match=r"names \['a'\] more than once"):
        read_class_list(["a", "b", "a"])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_class_list("missing.txt", tmp_path)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "classes": ["z", "y"]}, tmp_path / "c.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    assert carried_classes(tmp_path / "c.pt") == ["z", "y"] and carried_classes(tmp_path / "plain.pt") is None


def test_a_mismatch_names_the_differences():
    with pytest.raises(ValueError, match=r"in the checkpoint only \['x'\], in the collection only \['c'\]"):
        match_classes(["a", "b", "x"], ["a", "b", "c"], 3, "m.pt")
    with pytest.raises(ValueError, match="names 2 classes but it has 3 outputs"):
        match_classes(["a", "b"], ["a", "b"], 3, "m.pt")
    with pytest.raises(ValueError, match="has 5 classes and no class list; the collection has 3 species"):
        match_classes(None, ["a", "b", "c"], 5, "m.pt")
    assert match_classes(["c", "a", "b"], ["a", "b", "c"], 3, "m.pt") == (["c", "a", "b"], None)


def _run_classifier_job(tmp_path, collection, checkpoint, classes=None):
    from traitpipe.jobs import classifier

    tmp_path.mkdir()

    path = write_config(tmp_path, collection, classifier={
        "arch": "vit_tiny_patch16_224", "input_size": 32, "kwargs": TINY, "checkpoint": str(checkpoint),
        "classes": classes, "train": {"enabled": False}})
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(path)))
    images = ingest_shards(run_config, tmp_path)
    classifier.main(["--config", str(run_config), "--images", *images,
                     "--weights", str(tmp_path / "classifier.pt"), "--description", str(tmp_path / "classifier.json"),
                     "--evaluation", str(tmp_path / "evaluation.parquet"), "--failures", str(tmp_path / "f.parquet")])
    return json.loads((tmp_path / "classifier.json").read_text())


def test_the_classifier_job_keeps_a_checkpoints_own_class_order(small_collection, tmp_path, capsys):
    species = sorted(pd.read_csv(small_collection / "manifest.csv")["species"].unique())
    model, _ = build_classifier("vit_tiny_patch16_224", len(species), kwargs=TINY)
    torch.save({"state_dict": model.state_dict(), "classes": species[::-1]}, tmp_path / "carried.pt")
    assert head_outputs("vit_tiny_patch16_224", tmp_path / "carried.pt", kwargs=TINY) == len(species)
    meta = _run_classifier_job(tmp_path / "a", small_collection, tmp_path / "carried.pt")
    assert meta["classes"] == species[::-1]  # not sorted(species): output i is the checkpoint's class i
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    given = [species[1], species[0], *species[2:]]
    assert _run_classifier_job(tmp_path / "b", small_collection, tmp_path / "bare.pt", given)["classes"] == given
    meta = _run_classifier_job(tmp_path / "c", small_collection, tmp_path / "bare.pt")
    assert meta["classes"] == species and "no class list" in meta["extra"]["class_order_warning"]
    assert "WARNING" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"in the collection only \['" + species[0]):
        _run_classifier_job(tmp_path / "d", small_collection, tmp_path / "bare.pt", ["other", *species[1:]])
