"""Collections that arrive as a folder of species sub-folders or as a Darwin Core archive."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from traitpipe.collection.manifest import ManifestError, read_manifest
from traitpipe.store import read_table

from conftest import write_config, write_dwca, write_parquet_images

def test_a_folder_of_species_sub_folders_is_a_manifest(small_collection, tmp_path):
    manifest = pd.read_csv(small_collection / "manifest.csv", keep_default_na=False)
    for row in manifest.itertuples():
        target = tmp_path / "by species" / row.species / f"{row.specimen_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_collection / row.path, target)
    (tmp_path / "by species" / manifest.species[0] / "notes.txt").write_text("not an image: not listed")
    read = read_manifest(tmp_path / "by species", {"path": "path", "species": "species"}, tmp_path)
    assert len(read) == len(manifest) and sorted(read["species"].unique()) == sorted(manifest["species"].unique())
    assert read["path"].iloc[0] == f"by species/{sorted(manifest.species)[0]}/{sorted(manifest.specimen_id)[0]}.png"
    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(tmp_path / "by species"), "--root",
                           str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_table(tmp_path / "out", "images")) == len(manifest)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="holds no species sub-folder with images"):
        read_manifest(tmp_path / "empty", {"path": "path", "species": "species"}, tmp_path)


def test_a_darwin_core_archive_with_images_inside_and_beside_it(small_collection, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(small_collection, root)
    manifest = write_dwca(root, root / "dwca.zip", extra_media=[("occ0", "media/lost.png"),
                                                                 ("occ1", manifest_path := "images/beside.png")])
    shutil.copy(root / manifest.path[1], root / manifest_path)  # an image beside the archive (a duplicate)
    columns = {"path": "path", "species": "species", "specimen": "catalogNumber", "ranks": ["family", "genus"]}
    read = read_manifest(root / "dwca.zip", columns, root)
    assert len(read) == len(manifest) + 2
    assert read["path"].iloc[0] == f"dwca.zip!/media/{manifest.specimen_id[0]}.png"
    assert read["file"].iloc[0] == f"{root}/dwca.zip!/media/{manifest.specimen_id[0]}.png"
    inside = read[read["path"].str.startswith("dwca.zip!/")]
    assert inside[["species", "specimen_id", "family", "genus"]].values.tolist() == \
        manifest[["species", "specimen_id", "family", "genus"]].values.tolist()
    by_path = read.set_index("path")  # extra images belong to their occurrence
    assert by_path.loc["media/lost.png", "specimen_id"] == manifest.specimen_id[0]
    assert by_path.loc["images/beside.png", "specimen_id"] == manifest.specimen_id[1]
    config = write_config(tmp_path, root)
    raw = yaml.safe_load(config.read_text())
    raw["collection"].update(manifest="dwca.zip", columns=columns)
    config.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(config), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    images, failures = read_table(tmp_path / "out", "images"), read_table(tmp_path / "out", "failures")
    assert len(images) == len(manifest) and set(images["family"]) == set(manifest["family"])
    reasons = dict(zip(failures["path"], failures["reason"]))
    assert reasons["media/lost.png"].startswith("missing file")
    assert reasons["images/beside.png"].startswith("duplicate of manifest row 3")  # occ1: after occ0's two
    not_an_archive = tmp_path / "c" / "fake.zip"
    not_an_archive.write_text("PK? no")
    with pytest.raises(ManifestError, match="is not a zip archive"):
        read_manifest(not_an_archive, columns, root)


def test_images_in_a_parquet_column_are_read_a_row_group_at_a_time(small_collection, tmp_path):
    from traitpipe.collection import images as reader
    from traitpipe.config import validate_config
    from traitpipe.jobs.images import load_pixels

    manifest = write_parquet_images(small_collection, tmp_path / "pq")
    columns = {"path": "path", "species": "species", "image": "image", "specimen": "specimen_id",
               "ranks": ["family", "genus"]}
    read = read_manifest(tmp_path / "pq", columns, tmp_path)
    assert len(read) == len(manifest) and read["path"].iloc[13] == "pq/images-1.parquet#image/1"
    assert read["specimen_id"].tolist() == manifest["specimen_id"].tolist()
    assert reader.read_bytes(read["file"].iloc[13]) == (small_collection / manifest.path.iloc[13]).read_bytes()
    config = validate_config({"collection": {"root": str(tmp_path), "manifest": "pq", "columns": columns}})
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(tmp_path / "config.json"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    images = read_table(tmp_path / "out", "images")
    assert len(images) == len(manifest) and images["path"].str.contains(".parquet#image/").all()
    reader._ROW_GROUPS.clear()
    shuffled = images.sample(frac=1.0, random_state=1).reset_index(drop=True)  # a shard's order: not the files'
    pixels, ok, _ = load_pixels(config, shuffled)
    assert ok.all() and reader._ROW_GROUPS.reads == 5  # 12 + 8 rows: 3 + 2 row groups, each once
    path_of = manifest.set_index("specimen_id")["path"]
    for got, specimen in zip(pixels, shuffled["specimen_id"]):
        np.testing.assert_array_equal(got, reader.read_image(small_collection / path_of[specimen]))
    with pytest.raises(reader.ImageError, match="missing file: .* has 12 rows, none numbered 99"):
        reader.read_bytes(f"{tmp_path}/pq/images-0.parquet#image/99")
    with pytest.raises(ManifestError, match="has no column 'pixels'"):
        read_manifest(tmp_path / "pq", {**columns, "image": "pixels"}, tmp_path)
    with pytest.raises(ManifestError, match="column 'species' is string, not binary"):
        read_manifest(tmp_path / "pq", {**columns, "image": "species"}, tmp_path)


def test_parquet_row_groups_read_in_another_order_are_read_once_while_they_fit(small_collection, tmp_path,
                                                                               monkeypatch):
    """SST reads a species' frames by image id, not in storage order: the row groups it comes back to stay in
    memory, up to ROW_GROUP_CACHE_BYTES (the oldest dropped first), instead of being read again for each image."""
    from traitpipe.collection import images as reader

    manifest = write_parquet_images(small_collection, tmp_path / "pq")  # shuffled; 12 + 8 rows in row groups of 4
    columns = {"path": "path", "species": "species", "image": "image", "ranks": ["family", "genus"]}
    read = read_manifest(tmp_path / "pq", columns, tmp_path)
    read["original"] = manifest["path"].tolist()  # in the Parquet files' order
    read["image_id"] = [reader.image_id(reader.read_bytes(f)) for f in read["file"]]
    files = read.sort_values(["species", "image_id"])["file"].tolist()  # the segment job's order
    groups = [(f.split("#")[0], int(f.rsplit("/", 1)[1]) // 4) for f in files]
    changes = 1 + sum(a != b for a, b in zip(groups, groups[1:]))
    assert changes > len(set(groups)) == 5  # the order comes back to row groups it left

    reader._ROW_GROUPS.clear()
    assert [reader.read_bytes(f) for f in files] == [(small_collection / p).read_bytes()
                                                     for p in read.set_index("file").loc[files, "original"]]
    assert reader._ROW_GROUPS.reads == 5  # each once

    one = max(c.nbytes for c in reader._ROW_GROUPS._groups.values())
    monkeypatch.setattr(reader._ROW_GROUPS, "max_bytes", one)  # room for one row group: read at each change
    reader._ROW_GROUPS.clear()
    for f in files:
        reader.read_bytes(f)
        assert len(reader._ROW_GROUPS._groups) == 1
    assert reader._ROW_GROUPS.reads == changes
