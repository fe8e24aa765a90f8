import pandas as pd

from traitpipe.collection.manifest import load_manifest
from traitpipe.collection.shards import shard_rows
from traitpipe.config import canonical_json, load_config
from traitpipe.collection import ingest
from traitpipe.store import read_table

from conftest import ingest_shards, write_config


def _add_rows(root, rows):
    manifest = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    pd.concat([manifest, pd.DataFrame(rows)], ignore_index=True).fillna("").to_csv(root / "manifest.csv", index=False)


def _all_rows(config):
    return pd.concat(shard_rows(load_manifest(config), config["shard_size"]).values(), ignore_index=True)


def test_bad_images_become_failures_and_the_rest_goes_on(collection_copy, tmp_path):
    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    first, second = manifest.iloc[0], manifest.iloc[1]
    data = (collection_copy / second.path).read_bytes()
    (collection_copy / second.path).write_bytes(data[: len(data) // 2])  # truncated
    _add_rows(collection_copy, [
        {"path": "images/none.png", "species": first.species},  # missing
        {"path": first.path, "species": first.species},  # duplicate content
    ])
    config = load_config(write_config(tmp_path, collection_copy))
    (tmp_path / "run.json").write_text(canonical_json(config))
    results = tmp_path / "results"
    ingest_shards(tmp_path / "run.json", results)
    images, failures = read_table(results, "images"), read_table(results, "failures")
    assert len(images) == 20 - 1 and len(failures) == 3
    reasons = dict(zip(failures["path"], failures["reason"]))
    assert reasons["images/none.png"].startswith("missing file")
    assert reasons[second.path].startswith("cannot decode")
    assert reasons[first.path].startswith("duplicate of manifest row 1")
    assert (failures["stage"] == "ingest").all()
    assert images["image_id"].is_unique and images["width"].eq(64).all()
    assert set(images.columns) >= {"family", "genus", "label", "shard", "run_id", "config_hash"}
    assert images.groupby("shard").size().max() <= 8
    assert sorted(images["label"].unique()) == [0, 1, 2, 3]


def test_shards_do_not_depend_on_row_order(small_collection, collection_copy, tmp_path):
    config = load_config(write_config(tmp_path, small_collection))
    images, _ = ingest.ingest(config, _all_rows(config), progress=False)
    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    manifest.iloc[::-1].to_csv(collection_copy / "manifest.csv", index=False)
    config = load_config(write_config(tmp_path, collection_copy))
    reordered, _ = ingest.ingest(config, _all_rows(config), progress=False)
    assert dict(zip(images["image_id"], images["shard"])) == dict(zip(reordered["image_id"], reordered["shard"]))


def test_files_outside_the_root_are_refused_unopened_unless_allowed(collection_copy, tmp_path, monkeypatch):
    import shutil

    import pytest

    from traitpipe.collection.manifest import ManifestError

    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    first = manifest.iloc[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(collection_copy / first.path, outside / "leak.png")
    (collection_copy / "images" / "link.png").symlink_to(outside / "leak.png")  # inside by name, outside by target
    (collection_copy / "linked").symlink_to(outside)  # a folder inside by name, outside by target
    _add_rows(collection_copy, [{"path": "../outside/leak.png", "species": first.species},
                                {"path": "/etc/passwd", "species": first.species},
                                {"path": "images/link.png", "species": first.species},
                                {"path": "linked/leak.png", "species": first.species}])
    opened = []
    real_read = ingest.read_bytes
    monkeypatch.setattr(ingest, "read_bytes", lambda file: opened.append(str(file)) or real_read(file))
    config = load_config(write_config(tmp_path, collection_copy))
    images, failures = ingest.ingest(config, _all_rows(config), progress=False)
    refused = {"../outside/leak.png", "/etc/passwd", "images/link.png", "linked/leak.png"}
    assert set(failures["path"]) == refused and len(images) == 20
    assert all(r.startswith(f"outside the collection root {collection_copy}: refused, never opened")
               for r in failures["reason"])
    assert not any(f.endswith(("leak.png", "passwd", "link.png")) for f in opened)
    # the user who means it opts in: the copy is read (and is a duplicate of the first row's content)
    config = load_config(write_config(tmp_path, collection_copy,
                                      collection={**config["collection"], "allow_outside_root": True}))
    images, failures = ingest.ingest(config, _all_rows(config), progress=False)
    assert set(failures["path"]) == refused
    assert all(r.startswith(("duplicate of manifest row 1", "not an image")) for r in failures["reason"])
    # a mask or truth mask outside the root stops the run at parse time, naming the rows
    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    manifest.loc[1, "parts_truth"] = "../outside/leak.png"
    manifest.to_csv(collection_copy / "manifest.csv", index=False)
    config = load_config(write_config(tmp_path, collection_copy))
    with pytest.raises(ManifestError, match=r"1 row\(s\) name a 'parts_truth' file outside the collection root "
                                            r".* \(rows 2\): refused, never opened"):
        load_manifest(config)


def test_an_image_replaced_after_ingest_fails_later_steps_instead_of_passing_under_its_old_id(collection_copy,
                                                                                               tmp_path):
    from PIL import Image

    from traitpipe.jobs.images import load_pixels

    config = load_config(write_config(tmp_path, collection_copy))
    (tmp_path / "run.json").write_text(canonical_json(config))
    ingest_shards(tmp_path / "run.json", tmp_path / "results")
    images = read_table(tmp_path / "results", "images").head(3)
    replaced = images.iloc[1]
    Image.new("RGB", (64, 64), (9, 9, 9)).save(collection_copy / replaced.path)  # another specimen, same name
    pixels, ok, failures = load_pixels(config, images)
    assert ok.tolist() == [True, False, True] and len(pixels) == 2
    [reason] = failures["reason"]
    assert reason.startswith("changed since ingest: its content is image_id ") and replaced.image_id in reason
