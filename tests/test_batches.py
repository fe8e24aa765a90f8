"""Training streams its images: epochs drawn per species, batches read by DataLoader workers, never the collection
in memory."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from conftest import ingest_shards, write_config
from traitpipe.config import canonical_json, load_config
from traitpipe.models.batches import Batches, epoch_length, epoch_order
from traitpipe.models.classifier import build_classifier
from traitpipe.jobs.devices import resolve_device
from traitpipe.models.training import train_classifier
from traitpipe.store.tables import read_table

TINY = {"img_size": 32, "depth": 1, "embed_dim": 32, "num_heads": 2}


class Counted(Dataset):
    """A tensor's rows as items, counting the reads of each (in this process)."""

    def __init__(self, images: torch.Tensor):
        self.images, self.reads = images, torch.zeros(len(images), dtype=torch.long)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads[i] += 1
        return self.images[i]


def test_an_epoch_draws_at_most_the_cap_of_each_species_anew():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 5)
    generator = torch.Generator().manual_seed(0)
    draws = [epoch_order(labels, generator, cap=4) for _ in range(3)]
    for order in draws:
        assert torch.bincount(labels[order]).tolist() == [4, 3, 4] and len(order.unique()) == len(order)
        assert len(order) == epoch_length(labels, 4) == 11
    assert len({tuple(sorted(order[labels[order] == 0].tolist())) for order in draws}) > 1  # a new draw each epoch
    uncapped = epoch_order(labels, torch.Generator().manual_seed(5))
    assert uncapped.tolist() == torch.randperm(18, generator=torch.Generator().manual_seed(5)).tolist()
    assert epoch_length(labels) == 18


def test_training_reads_only_each_epochs_draw():
    labels = torch.arange(3).repeat_interleave(6)
    images = Counted(torch.randn(18, 3, 32, 32))
    model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
    history = train_classifier(model, images, labels, epochs=3, batch_size=4, lr=1e-3, weight_decay=0.0,
                               linear_probe=False, seed=0, device=resolve_device("cpu"), progress=False,
                               max_per_class=2)
    assert len(history) == 3 and int(images.reads.sum()) == 3 * 3 * 2  # 3 epochs x 3 species x 2 images
    assert all(int(images.reads[labels == c].sum()) == 3 * 2 for c in range(3))


def test_workers_and_memory_train_the_same_model():
    """Batches read by two worker processes from a dataset give the weights the in-memory tensor gives."""
    torch.manual_seed(0)
    labels = torch.arange(3).repeat(8)
    images = torch.randn(24, 3, 32, 32)
    trained = []
    for source, workers in ((images, 0), (Counted(images), 2)):
        torch.manual_seed(1)
        model, _ = build_classifier("vit_tiny_patch16_224", 3, kwargs=TINY)
        history = train_classifier(model, source, labels, epochs=2, batch_size=5, lr=1e-3, weight_decay=0.0,
                                   linear_probe=False, seed=0, device=resolve_device("cpu"), progress=False,
                                   val=(source, labels), workers=workers)
        trained.append((history, model.state_dict()))
    assert trained[0][0] == trained[1][0]
    for name, value in trained[0][1].items():
        assert torch.equal(value, trained[1][1][name]), name
    batches = Batches(Counted(images), batch_size=5, workers=2)
    for order in (torch.tensor([23, 0, 7]), torch.arange(24).flip(0)):  # workers follow each pass's order
        for index, batch in batches(order):
            assert torch.equal(batch, images[index])


def test_training_inputs_stream_from_the_files_and_leave_out_changed_ones(collection_copy, tmp_path):
    from PIL import Image

    from traitpipe.jobs.images import load_pixels
    from traitpipe.jobs.splits import labelled_images
    from traitpipe.models.transforms import to_batch

    config = load_config(write_config(tmp_path, collection_copy, loader={"workers": 2}))
    (tmp_path / "run.json").write_text(canonical_json(config))
    tables = ingest_shards(tmp_path / "run.json", tmp_path / "results")
    replaced = read_table(tmp_path / "results", "images").sort_values(["species", "image_id"]).iloc[4]
    Image.new("RGB", (64, 64), (9, 9, 9)).save(collection_copy / replaced.path)
    rows, images, labels, is_val, failures = labelled_images(config, tables, 32, [0.5] * 3, [0.25] * 3, 0.2, 0)
    assert len(rows) == len(images) == len(labels) == len(is_val) == 19
    assert failures["image_id"].tolist() == [replaced.image_id]
    assert failures["reason"].iloc[0].startswith("changed since ingest")
    assert replaced.image_id not in set(rows["image_id"])
    pixels, ok, _ = load_pixels(config, rows)
    assert ok.all()
    expected = to_batch(pixels, 32, [0.5] * 3, [0.25] * 3)
    streamed = torch.cat([batch for _, batch in Batches(images, 8, workers=2)()])
    assert streamed.dtype == torch.float32 and torch.equal(streamed, expected)


def _segment_job(run_config, tables, references, out):
    from traitpipe.jobs import segment
    from traitpipe.store.tables import table_path

    segment.main(["--config", str(run_config), "--images", *tables, "--maps", str(out / "maps.zarr"),
                  "--parts", str(table_path(out, "parts", "0")), "--retrieval", str(table_path(out, "retrieval", "0")),
                  "--failures", str(table_path(out, "failures", "0", "segment"))]
                 + [a for name, (image, mask) in references.items() for a in ("--reference", name, image, mask)])


@pytest.mark.parametrize("second_read", ["works", "breaks"])
def test_segment_reads_an_image_once_and_tracks_a_species_as_if_one_it_cannot_read_were_not_there(
        small_collection, tmp_path, monkeypatch, second_read):
    """SAM 2 tracks frames read once, ahead of it; an image that cannot be read leaves its species' pseudo-video
    (the species is tracked again without it: the maps of a run without that image). If a frame read fine the
    first time breaks on its second read, its species fails alone."""
    import pandas as pd

    from traitpipe.collection.images import ImageError
    from traitpipe.collection.manifest import load_manifest
    from traitpipe.jobs.images import ImageInputs, read_rows
    from traitpipe.collection.references import find_references
    from traitpipe.store.maps import open_maps

    segment = {"image_size": 128, "canvas": 64, "parts": "masks/parts.json", "retrieval": {"part": "left_forewing"}}
    config = load_config(write_config(tmp_path, small_collection, shard_size=100, segment=segment,
                                      loader={"workers": 0}))  # reads in this process, where they are counted
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(config))
    tables = ingest_shards(run_config, tmp_path / "results")
    references = find_references(load_manifest(config), None, config["collection"]["root"])
    rows = read_rows(tables)
    reference = rows["path"].map(lambda p: str(small_collection / p)).isin([image for image, _ in references.values()])
    species = sorted(references)[1]
    queries = rows.index[(rows["species"] == species) & ~reference]
    victim, other = rows.at[queries[1], "image_id"], rows.at[queries[-1], "image_id"]  # later frames move up one

    reads = pd.Series(0, index=rows["image_id"])
    read = ImageInputs.pixels

    def counted(self, i):
        reads[self.ids[i]] += 1
        if self.ids[i] == victim or (second_read == "breaks" and self.ids[i] == other and reads[other] == 2):
            raise ImageError("changed since ingest (test)")
        return read(self, i)

    monkeypatch.setattr(ImageInputs, "pixels", counted)
    broken = tmp_path / "broken"
    _segment_job(run_config, tables, references, broken)
    failures = read_table(broken, "failures")
    if second_read == "breaks":
        assert set(failures["image_id"]) == set(rows.loc[rows["species"] == species, "image_id"])
        assert (failures["reason"] == f"segmenting {species}: changed since ingest (test)").all()
        assert species not in set(read_table(broken, "parts")["species"])
        return
    monkeypatch.undo()
    without = tmp_path / "without.parquet"
    rows[rows["image_id"] != victim].to_parquet(without)
    _segment_job(run_config, [str(without)], references, tmp_path / "without")
    # a query is read for tracking, then for the round trip (the reference images by load_support, not here);
    # the species with the unreadable image reads its other queries again to be tracked without it
    expected = pd.Series(np.where(reference, 0, 2), index=rows["image_id"])
    expected[rows.loc[queries, "image_id"]] = 3
    expected[victim] = 2  # by each stream, which reads past it
    assert reads.equals(expected)
    assert failures[["image_id", "reason"]].values.tolist() == [[victim, "changed since ingest (test)"]]
    for table in ("parts", "retrieval"):
        assert read_table(broken, table).drop(columns="run_id").equals(
            read_table(tmp_path / "without", table).drop(columns="run_id"))
    maps, alone = open_maps(broken / "maps.zarr"), open_maps(tmp_path / "without" / "maps.zarr")
    kept = rows["image_id"][rows["image_id"] != victim].tolist()
    assert maps["image_id"][:].tolist() == alone["image_id"][:].tolist() == kept
    np.testing.assert_array_equal(maps["part_labels"][:], alone["part_labels"][:])


def test_read_ahead_hands_out_frames_read_by_workers_in_the_order_asked_and_names_the_unreadable(small_collection):
    """The segment job's stream with DataLoader workers: each frame asked for is that image's pixels (not a
    neighbour's), an unreadable one (changed since ingest) comes through a worker as its reason, the last
    frame can be asked again and an earlier one cannot."""
    import pandas as pd

    from traitpipe.collection.images import MAX_PIXELS, ImageError, image_id, read_image
    from traitpipe.jobs.images import ImageInputs, ReadAhead

    paths = pd.read_csv(small_collection / "manifest.csv")["path"].tolist()[:9]
    ids = [image_id((small_collection / p).read_bytes()) for p in paths]
    ids[4] = "0" * 16
    config = {"collection": {"root": str(small_collection), "max_pixels": MAX_PIXELS}}
    order = [8, 2, 4, 0, 7, 1]  # not every image, not in file order
    stream = ReadAhead(ImageInputs(config, pd.DataFrame({"path": paths, "image_id": ids})), order, workers=2)
    for i in order:
        if i == 4:
            with pytest.raises(ImageError, match="changed since ingest"):
                stream[i]
        else:
            np.testing.assert_array_equal(stream[i], read_image(small_collection / paths[i]))
    np.testing.assert_array_equal(stream[1], read_image(small_collection / paths[1]))
    assert list(stream.problems) == [4]
    with pytest.raises(ValueError, match="reads forward only"):
        stream[7]
