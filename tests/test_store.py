import json

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as pq
import pytest

from traitpipe.config import validate_config
from traitpipe.store import (background_writes, map_path, map_writer, open_maps, provenance, read_provenance, read_table, table_path,
                             write_maps, write_table)

CONFIG = validate_config({"collection": {"root": "c", "manifest": "m.csv"}, "run_id": "test"})
FAILURE = {"path": "a.png", "image_id": None, "species": "X y", "shard": "00000", "row": 1, "reason": "missing file"}


def test_table_round_trip_with_run_columns_partition_and_provenance(tmp_path):
    prov = provenance(CONFIG)
    path = table_path(tmp_path, "failures", "00000", "ingest")
    assert path == tmp_path / "tables" / "failures" / "stage=ingest" / "part-00000.parquet"
    write_table(pd.DataFrame([FAILURE]), path, "failures", prov)
    back = read_table(tmp_path, "failures")
    assert back.loc[0, "reason"] == "missing file" and back.loc[0, "stage"] == "ingest"
    assert back.loc[0, "run_id"] == "test" and back.loc[0, "config_hash"] == prov["config_hash"]
    assert read_provenance(path)["libraries"]["pyarrow"] == pyarrow.__version__
    assert read_provenance(path)["config_hash"] == prov["config_hash"]
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_query_views_read_a_results_folder_whose_name_is_hostile_sql_and_glob(tmp_path):
    from traitpipe.store.query import connect

    results = tmp_path / "res 'x\" [1] * ?"  # a quote ends a string literal; [1], * and ? are glob syntax
    write_table(pd.DataFrame([FAILURE]), table_path(results, "failures", "00000", "ingest"), "failures",
                provenance(CONFIG))
    # a sibling folder the glob "[1]" would match instead of the real one: it must not be read
    write_table(pd.DataFrame([{**FAILURE, "reason": "wrong folder"}]),
                table_path(tmp_path / "res 'x\" 1 * ?", "failures", "00000", "ingest"), "failures",
                provenance(CONFIG))
    rows = connect(results).execute("select reason, stage from failures").fetchall()
    assert rows == [("missing file", "ingest")]


def test_interrupted_table_write_leaves_the_old_file_and_no_new_one(tmp_path, monkeypatch):
    prov = provenance(CONFIG)
    path = table_path(tmp_path, "failures", "00000", "ingest")
    write_table(pd.DataFrame([FAILURE]), path, "failures", prov)
    before = path.read_bytes()

    def crash(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        write_table(pd.DataFrame([FAILURE, FAILURE]), path, "failures", prov)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    other = table_path(tmp_path, "failures", "00001", "ingest")
    with pytest.raises(KeyboardInterrupt):
        write_table(pd.DataFrame([FAILURE]), other, "failures", prov)
    assert not other.exists()


def test_write_table_refuses_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="lack column"):
        write_table(pd.DataFrame([{"path": "a"}]), tmp_path / "x.parquet", "failures", provenance(CONFIG))


def test_zarr_maps_round_trip(tmp_path):
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float16)
    path = map_path(tmp_path, "cam-gradcam", "00002")
    write_maps(path, ["a", "b", "c"], {"cam": (maps, ("y", "x"))}, {"provenance": provenance(CONFIG)})
    group = open_maps(path)
    assert group["image_id"][:].tolist() == ["a", "b", "c"]
    assert np.array_equal(group["cam"][:], maps)
    assert group["cam"].chunks == (1, 8, 8) and group["cam"].metadata.dimension_names == ("image", "y", "x")
    assert group.metadata.zarr_format == 3 and group.attrs["provenance"]["run_id"] == "test"


def test_a_map_store_keeps_its_images_chunks_a_few_files(tmp_path, monkeypatch):
    from traitpipe.store import maps as store

    monkeypatch.setattr(store, "IMAGES_PER_FILE", 4)
    data = np.random.default_rng(0).random((10, 8, 8)).astype(np.float16)
    path = write_maps(tmp_path / "m.zarr", list("abcdefghij"), {"cam": (data, ("y", "x"))}, {})
    assert sorted(p.name for p in (path / "cam" / "c").iterdir()) == ["0", "1", "2"]  # 4 + 4 + 2 images
    cam = open_maps(path)["cam"]
    assert cam.chunks == (1, 8, 8) and cam.shards == (4, 8, 8) and np.array_equal(cam[3:6], data[3:6])


def test_a_write_clears_what_a_killed_writer_of_the_same_output_left(tmp_path):
    from traitpipe.store.atomic import atomic_path

    path = map_path(tmp_path, "cam-gradcam", "00002")
    stale = [path.with_name(f".{path.name}.tmp-999999"), path.with_name(f".{path.name}.old-888888")]
    other = path.with_name(".shard-00003.zarr.tmp-999999")  # another output's: not ours to touch
    for leftover in [*stale, other]:
        (leftover / "cam").mkdir(parents=True)
    write_maps(path, ["a"], {"cam": (np.zeros((1, 4, 4), np.float16), ("y", "x"))}, {})
    assert not any(s.exists() for s in stale) and other.exists() and open_maps(path)["cam"].shape == (1, 4, 4)
    with atomic_path(tmp_path / "t.parquet") as tmp:  # files too
        tmp.write_text("x")
    (tmp_path / ".t.parquet.tmp-77").write_text("left by a kill")
    with atomic_path(tmp_path / "t.parquet") as tmp:
        tmp.write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".t")) == []


def test_interrupted_zarr_write_keeps_the_finished_store(tmp_path):
    path = map_path(tmp_path, "segment", "00000")
    write_maps(path, ["a"], {"labels": (np.ones((1, 4, 4), np.uint8), ("y", "x"))}, {})
    with pytest.raises(RuntimeError):
        with map_writer(path, ["a", "b"], {"labels": ((4, 4), "uint8", ("y", "x"))}, {}) as group:
            group["labels"][0] = np.full((4, 4), 7)
            raise RuntimeError("killed half way")
    assert open_maps(path)["labels"][:].tolist() == np.ones((1, 4, 4)).tolist()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_background_writes_land_in_order_and_a_failed_one_keeps_the_old_store(tmp_path):
    path = map_path(tmp_path, "cam", "00000")
    batches = [np.random.default_rng(i).random((3, 2, 2)).astype(np.float32) for i in range(5)]
    with map_writer(path, list("abcdefghijklmno"), {"cam": ((2, 2), "float32", ("y", "x"))}, {}) as group:
        with background_writes(group, depth=2) as write:
            for i, batch in enumerate(batches):  # more batches than the queue holds
                write("cam", 3 * i, batch)
    assert np.array_equal(open_maps(path)["cam"][:], np.concatenate(batches))
    with pytest.raises(ValueError, match="could not convert"):  # fails in the writer thread, raised in the job
        with map_writer(path, ["a", "b"], {"cam": ((2, 2), "float32", ("y", "x"))}, {}) as group:
            with background_writes(group) as write:
                write("cam", 0, np.full((2, 2, 2), "x"))
    assert np.array_equal(open_maps(path)["cam"][:], np.concatenate(batches))  # the finished store stays whole


def test_a_full_disk_ends_a_job_with_a_clear_message_and_no_partial_output(collection_copy, tmp_path, monkeypatch,
                                                                          capsys):
    import errno

    import pyarrow.parquet

    from traitpipe.cli import main
    from traitpipe.collection.manifest import load_manifest
    from traitpipe.collection.shards import shard_rows
    from traitpipe.config import load_config
    from traitpipe.store.run import write_run_config

    from conftest import write_config

    config = load_config(write_config(tmp_path, collection_copy))
    write_run_config(tmp_path / "run.json", config)
    rows = next(iter(shard_rows(load_manifest(config), config["shard_size"]).values()))
    rows.to_parquet(tmp_path / "rows.parquet")

    def full(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1 the first blocks")
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(pyarrow.parquet, "write_table", full)
    images = table_path(tmp_path / "results", "images", "00000")
    with pytest.raises(SystemExit) as stopped:
        main(["job", "ingest", "--config", str(tmp_path / "run.json"), "--rows", str(tmp_path / "rows.parquet"),
              "--images", str(images), "--failures", str(tmp_path / "results" / "f.parquet")])
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert "job ingest: no space left to write " in message and "Nothing partial was kept" in message
    assert not [p for p in (tmp_path / "results").rglob("*") if p.is_file()]  # neither the file nor its temporary


@pytest.mark.parametrize("move_bytes", [None, 3 * 16])  # a file's worth of rows at a time, or three rows
def test_keep_images_leaves_out_rows_across_files_in_blocks(tmp_path, monkeypatch, move_bytes):
    """The rows kept move forward in place, over several 512-image files of an array and in blocks bounded in
    bytes (maps.MOVE_BYTES), and every array of the store keeps the same images."""
    from traitpipe.store import maps

    if move_bytes is not None:
        monkeypatch.setattr(maps, "MOVE_BYTES", move_bytes)  # a cam row here is 4 float32 = 16 bytes
    n = 2 * maps.IMAGES_PER_FILE + 76
    ids = [f"i{k:05d}" for k in range(n)]
    cams = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    labels = (np.arange(n * 6) % 251).astype(np.uint8).reshape(n, 2, 3)
    keep = np.random.default_rng(0).random(n) > 0.3
    keep[:40] = True  # the first rows stay where they are, the rest move
    with maps.map_writer(tmp_path / "m.zarr", ids, {"cam": ((4,), "float32", ("x",)),
                                                    "labels": ((2, 3), "uint8", ("y", "x"))}, {}) as group:
        group["cam"][:], group["labels"][:] = cams, labels
        maps.keep_images(group, keep)
    stored = open_maps(tmp_path / "m.zarr")
    assert stored["image_id"][:].tolist() == [i for i, k in zip(ids, keep) if k]
    np.testing.assert_array_equal(stored["cam"][:], cams[keep])
    np.testing.assert_array_equal(stored["labels"][:], labels[keep])


def test_docs_outputs_md_is_written_from_the_schemas():
    """docs/outputs.md documents every table and column from store/schemas.py, so the two cannot differ."""
    from pathlib import Path

    from traitpipe.store.schemas import TABLE_DOCS, TABLES, outputs_markdown

    assert set(TABLE_DOCS) == set(TABLES) and all(f.metadata and f.metadata[b"doc"] for s in TABLES.values()
                                                   for f in s)
    doc = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
    assert doc.read_text() == outputs_markdown(), "docs/outputs.md is stale: run python scripts/write_outputs_doc.py"


def test_a_model_card_reads_back_and_refuses_another_layout(tmp_path):
    """One layout for every model: what a card writes reads back equal; a description in another layout (the
    keys a job wrote before cards) is refused with the keys named, not half-read."""
    from traitpipe.store.cards import ModelCard, Source

    card = ModelCard("intr", Source("file", "c.pth", "ab"), sha256="cd", classes=["A a"], mean=[0.5] * 3,
                     std=[0.5] * 3, input_size=64, accuracy={"train": 1.0, "val": 0.5}, architecture={"nheads": 2})
    card.write(tmp_path / "intr.json")
    assert ModelCard.read(tmp_path / "intr.json") == card
    assert card.used()["origin"] == "checkpoint c.pth" and card.used()["checkpoint_sha256"] == "ab"
    assert ModelCard("clip", Source("trained here", trained="contrastively")).origin() == "trained here (contrastively)"
    assert ModelCard("c", Source("random"), random_weights=True).origin() == "random weights"
    (tmp_path / "old.json").write_text(json.dumps({"arch": "vit", "classes": ["A a"], "source": "trained here"}))
    with pytest.raises(ValueError, match="old.json: not a traitpipe model card: unknown keys arch"):
        ModelCard.read(tmp_path / "old.json")
