"""Shared fixtures: a small synthetic collection and a config pointing at it; the collection in other forms
(a Darwin Core archive, images in Parquet files)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from traitpipe.collection import synthesize

# make test runs three test processes on two cores: one torch thread each. With torch's default (a thread per
# core), the in-process SAM 2 tests took 20 times as long beside a workflow test (163 s, 7.6 s alone): the
# threads of one process wait, spinning, for the one another process holds off its core. The workflow's own jobs
# run with --max-threads 1 (test_workflow.ONE_THREAD); a test that names threads sets them itself.
torch.set_num_threads(1)

# tests/data holds the scripts that made the reference files from the authors' checkouts: not tests, and they
# need a checkout to run
collect_ignore_glob = ["data/*"]


@pytest.fixture(scope="session")
def small_collection(tmp_path_factory) -> Path:
    """4 species x 5 specimens at 64 px (read-only: copy it before changing files)."""
    return synthesize(tmp_path_factory.mktemp("collection"), n_species=4, per_species=5, size=64, seed=3)


@pytest.fixture
def collection_copy(small_collection, tmp_path) -> Path:
    """A private, writable copy of the small collection."""
    return Path(shutil.copytree(small_collection, tmp_path / "collection"))


def write_config(tmp_path: Path, root: Path, **overrides) -> Path:
    """A run config for a collection, with top-level overrides; returns its path."""
    config = {
        "collection": {"root": str(root), "manifest": "manifest.csv", "phylogeny": "phylogeny.nwk",
                       "columns": {"specimen": "specimen_id", "mask": "mask", "ranks": ["family", "genus"],
                                   "parts_truth": "parts_truth", "trait_truth": "trait_truth"}},
        "results": str(tmp_path / "results"),
        "shard_size": 8,
        "device": "cpu",
        "evaluate": {"cryptic_pairs": "collection.json"},
        "ingest": {"threads": 2},
        "segment": {"image_size": 128, "canvas": 64, "parts": "masks/parts.json"},
        "classifier": {"arch": "vit_tiny_patch16_224", "input_size": 32,
                       "kwargs": {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2},
                       "train": {"epochs": 2, "batch_size": 8}},
        "explain": {"batch_size": 8, "methods": [{"name": "gradcam", "alphas": [None, 1.0]}]},
        "prompt_cam": {"epochs": 2, "warmup_epochs": 1, "batch_size": 8},
        "phylo": {"image_size": 32, "distances": [0.33, 0.5],
                  "model": {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16],
                            "z_channels": 16, "embed_dim": 8, "n_embed": 16, "norm_groups": 8, "hidden": 16,
                            "phylo_channels": 8, "code_dim": 4, "codes_per_level": 2, "n_codes": 16,
                            "nonphylo_levels": 3},
                  "train": {"base_epochs": 1, "epochs": 2, "batch_size": 8}},
    }
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ingest_shards(run_config: Path, folder: Path) -> list[str]:
    """Run the ingest job of every shard as the workflow does (rows files, then one job per shard) into
    ``folder``; returns the images table files in shard order."""
    import json

    from traitpipe.collection.manifest import load_manifest
    from traitpipe.collection.shards import shard_rows
    from traitpipe.jobs import ingest  # the workflow's job, as a rule runs it
    from traitpipe.store.tables import table_path

    config = json.loads(Path(run_config).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for shard, rows in shard_rows(load_manifest(config), config["shard_size"]).items():
        rows.to_parquet(folder / f"rows-{shard}.parquet")
        images.append(str(table_path(folder, "images", shard)))
        ingest.main(["--config", str(run_config), "--rows", str(folder / f"rows-{shard}.parquet"),
                     "--images", images[-1], "--failures", str(table_path(folder, "failures", shard, "ingest"))])
    return images


CORE = "http://rs.tdwg.org/dwc/terms/"
META = f"""<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" ignoreHeaderLines="1"
        rowType="http://rs.tdwg.org/dwc/terms/Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0"/>
    <field index="1" term="{CORE}scientificName"/>
    <field index="2" term="{CORE}catalogNumber"/>
    <field index="3" term="{CORE}family"/>
    <field index="4" term="{CORE}genus"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" ignoreHeaderLines="1"
             rowType="http://rs.tdwg.org/ac/terms/Multimedia">
    <files><location>multimedia.txt</location></files>
    <coreid index="0"/>
    <field index="1" term="http://rs.tdwg.org/ac/terms/accessURI"/>
    <field index="2" term="http://purl.org/dc/terms/format"/>
  </extension>
</archive>
"""


def write_dwca(collection, archive, inside=True, extra_media=(), base_url=None):
    """The small collection as a Darwin Core archive: occurrences with their taxonomy, one image each (inside
    the archive under media/, beside it as it lies, or with ``base_url`` at ``<base_url>/img/<path>``), plus
    ``extra_media`` (occurrence id, location) rows."""
    manifest = pd.read_csv(collection / "manifest.csv", keep_default_na=False)
    core = ["id\tscientificName\tcatalogNumber\tfamily\tgenus"]
    media = ["coreid\taccessURI\tformat"]
    with zipfile.ZipFile(archive, "w") as zipped:
        for i, row in manifest.iterrows():
            core.append(f"occ{i}\t{row.species}\t{row.specimen_id}\t{row.family}\t{row.genus}")
            location = (f"{base_url}/img/{row.path}" if base_url else f"media/{row.specimen_id}.png" if inside
                        else row.path)
            media.append(f"occ{i}\t{location}\timage/png")
            if inside and not base_url:
                zipped.write(collection / row.path, location)
        media += [f"{occ}\t{location}\timage/png" for occ, location in extra_media]
        zipped.writestr("meta.xml", META)
        zipped.writestr("occurrence.txt", "\n".join(core) + "\n")
        zipped.writestr("multimedia.txt", "\n".join(media) + "\n")
    return manifest


def write_parquet_images(collection, folder, rows_per_file=12, row_group_size=4):
    """A collection as Parquet files whose ``image`` column holds the encoded images (the layout of Imageomics'
    download tools) beside every manifest column but the path, in shuffled order; returns that manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = pd.read_csv(collection / "manifest.csv", keep_default_na=False).sample(frac=1.0, random_state=0)
    folder.mkdir(parents=True)
    for k, start in enumerate(range(0, len(manifest), rows_per_file)):
        part = manifest.iloc[start:start + rows_per_file]
        columns = {name: part[name].astype(str).tolist() for name in part.columns if name != "path"}
        images = pa.array([(collection / p).read_bytes() for p in part.path], pa.binary())
        table = pa.table({"uuid": [f"u{i}" for i in part.index], **columns, "image": images})
        pq.write_table(table, folder / f"images-{k}.parquet", row_group_size=row_group_size)
    return manifest


def result_differences(first: Path, second: Path) -> list[str]:
    """What differs between two runs' results: every Parquet table, all but its run_id column, and every
    array of every Zarr store, compared exactly. An empty list when the two are the same."""
    import numpy as np
    import pyarrow.parquet as pq
    import zarr

    differences = []
    tables = sorted(p.relative_to(first) for p in first.rglob("*.parquet"))
    if tables != sorted(p.relative_to(second) for p in second.rglob("*.parquet")):
        differences.append("not the same tables")
    for table in (t for t in tables if (second / t).is_file()):
        a, b = (pq.read_table(root / table).to_pandas().drop(columns=["run_id"], errors="ignore")
                for root in (first, second))
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as error:
            differences.append(f"{table}: {str(error).splitlines()[0:3]}")
    stores = sorted(p.parent.relative_to(first) for p in first.rglob("*.zarr/zarr.json"))
    if stores != sorted(p.parent.relative_to(second) for p in second.rglob("*.zarr/zarr.json")):
        differences.append("not the same map stores")
    for store in (s for s in stores if (second / s).is_dir()):
        arrays = [dict(zarr.open_group(root / store, mode="r").arrays()) for root in (first, second)]
        if sorted(arrays[0]) != sorted(arrays[1]):
            differences.append(f"{store}: not the same arrays")
        for name in arrays[0]:
            if name in arrays[1] and not np.array_equal(arrays[0][name][...], arrays[1][name][...], equal_nan=True):
                differences.append(f"{store}/{name}")
    return differences
