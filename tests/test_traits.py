"""Trait answers: where maps point, scores against the truth, species summaries with dask, the report."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from traitpipe.config import canonical_json, load_config
from traitpipe.segment.parts import to_canvas
from traitpipe.store.maps import open_maps, write_maps
from traitpipe.store.tables import table_path
from traitpipe.traits.maps import mask_scores, place_maps, resize_maps

from conftest import ingest_shards, write_config

PARTS = {"1": "head", "2": "thorax", "3": "abdomen", "4": "left_forewing", "5": "right_forewing",
         "6": "left_hindwing", "7": "right_hindwing"}


def _run_config(tmp_path, collection, **overrides):
    path = write_config(tmp_path, collection, **overrides)
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(path)))
    return run_config


def _truth_as_prediction(tmp_path, collection, canvas=48):
    """Stores whose SST labels are the true parts and whose one 'map' per image is the true trait mask."""
    run_config = _run_config(tmp_path, collection)
    images = ingest_shards(run_config, tmp_path / "tables")
    rows = pd.read_parquet(images[0])
    labels, transforms, traits = [], [], []
    for row in rows.itertuples():
        placed, transform = to_canvas(np.array(Image.open(row.parts_truth)), canvas)
        labels.append(placed)
        transforms.append(transform)
        trait = np.array(Image.open(row.trait_truth)) > 0
        traits.append(trait if trait.shape == (row.height, row.width) else np.zeros((row.height, row.width), bool))
    ids = rows["image_id"].tolist()
    sizes = rows[["height", "width"]].to_numpy(np.int32)
    prov = {"models": {}}
    parts = sorted(int(k) for k in PARTS)
    masks = np.stack([[placed == p for p in parts] for placed in labels])  # each part's own mask
    write_maps(tmp_path / "segment.zarr", ids, {"part_labels": (np.stack(labels), ("y", "x")),
                                                "part_masks": (masks, ("part", "y", "x")),
                                                "image_size": (sizes, ("hw",)),
                                                "canvas_transform": (np.stack(transforms), ("transform",))},
               {"provenance": prov, "parts": PARTS, "canvas": canvas, "mask_parts": parts})
    cam = np.stack(traits).astype(np.float16)[:, None]  # (N, 1 alpha, H, W): the map is the trait itself
    write_maps(tmp_path / "cam.zarr", ids, {"cam": (cam, ("alpha", "y", "x"))},
               {"provenance": prov, "method": "gradcam", "alphas": [None]})
    parts = pd.DataFrame({"image_id": ids, "frame_index": [0] + [1] * (len(ids) - 1)})
    parts.to_parquet(tmp_path / "parts.parquet")
    return run_config, images[0], rows


def test_the_truth_fed_back_as_the_prediction_scores_one(small_collection, tmp_path):
    from traitpipe.jobs import cam_parts, evaluate, part_truth

    run_config, images, rows = _truth_as_prediction(tmp_path, small_collection)
    out = {name: str(tmp_path / f"{name}.parquet") for name in ("cam_parts", "map_truth", "part_truth", "evaluation")}
    cam_parts.main(["--config", str(run_config), "--images", images, "--labels", str(tmp_path / "segment.zarr"),
                    "--maps", str(tmp_path / "cam.zarr"), "--cam-parts", out["cam_parts"], "--map-truth",
                    out["map_truth"], "--failures", str(tmp_path / "f1.parquet")])
    part_truth.main(["--config", str(run_config), "--images", images, "--labels", str(tmp_path / "segment.zarr"),
                     "--parts", str(tmp_path / "parts.parquet"), "--part-truth", out["part_truth"],
                     "--failures", str(tmp_path / "f2.parquet")])
    truth = pd.read_parquet(out["part_truth"])
    present = truth[truth["union_pixels"] > 0]
    assert len(present) and (present["iou"] == 1.0).all()
    maps = pd.read_parquet(out["map_truth"])
    assert len(maps) == len(rows) and maps["trait_pointing"].all() and np.allclose(maps["trait_energy"], 1.0)
    # the trait lies on one part: all the map's mass is there, and its peak
    where = pd.read_parquet(out["cam_parts"])
    top = where.sort_values("mass_share").groupby("image_id").tail(1)
    assert (top["mass_share"] > 0.9).all() and top["peak_in_part"].all()
    assert where.groupby("image_id")["peak_in_part"].sum().eq(1).all()

    folder = tmp_path / "tables" / "evaluation_inputs"
    for table, file in (("map_truth", out["map_truth"]), ("part_truth", out["part_truth"])):
        target = table_path(folder, table, "00000", "gradcam" if table == "map_truth" else None)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target)
    evaluate.main(["--config", str(run_config), "--images", images, "--cams",
                   "--part-truth", str(table_path(folder, "part_truth", "00000")),
                   "--map-truth", str(table_path(folder, "map_truth", "00000", "gradcam")),
                   "--cryptic-pairs", str(small_collection / "collection.json"), "--evaluation", out["evaluation"]])
    scores = pd.read_parquet(out["evaluation"])
    value = {(r.method, r.metric, r.subset): r.value for r in scores[scores["part"].isna()].itertuples()}
    assert value[("sst", "miou", "queries")] == 1.0
    assert value[("gradcam", "trait_pointing", "all")] == 1.0
    assert value[("gradcam", "trait_energy", "all")] == pytest.approx(1.0)
    assert value[("uniform", "trait_energy", "all")] < 0.05  # the trait is a small mark
    assert set(scores.loc[scores["metric"] == "iou", "part"]) <= set(PARTS.values())


def test_a_truth_mask_of_the_wrong_size_is_a_failure_row_and_the_rest_is_scored(collection_copy, tmp_path):
    from traitpipe.jobs import cam_parts

    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    victim = collection_copy / manifest["trait_truth"].iloc[1]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(victim)
    run_config, images, rows = _truth_as_prediction(tmp_path, collection_copy)
    cam_parts.main(["--config", str(run_config), "--images", images, "--labels", str(tmp_path / "segment.zarr"),
                    "--maps", str(tmp_path / "cam.zarr"), "--cam-parts", str(tmp_path / "where.parquet"),
                    "--map-truth", str(tmp_path / "truth.parquet"), "--failures", str(tmp_path / "f.parquet")])
    failures = pd.read_parquet(tmp_path / "f.parquet")
    assert failures["path"].tolist() == [manifest["path"].iloc[1]]
    assert "trait truth mask" in failures["reason"].iloc[0] and "10x12" in failures["reason"].iloc[0]
    assert len(pd.read_parquet(tmp_path / "truth.parquet")) == len(rows) - 1  # the others are scored


def test_maps_land_where_the_labels_were_placed():
    raw = np.zeros((1, 4, 2), np.float32)
    raw[0, 0, 0] = 1.0  # top-left patch of a tall image
    labels = np.zeros((40, 20), np.uint8)
    labels[:10, :10] = 1
    placed, transform = to_canvas(labels, 32)
    on_canvas = place_maps(raw, transform, labels.shape, 32)
    mass, peak = mask_scores(on_canvas, (placed == 1)[None])
    assert peak[0, 0] and mass[0, 0] > 0.7
    assert np.allclose(resize_maps(raw, (4, 2)), raw)  # same size: unchanged


def test_species_means_on_a_distributed_cluster_equal_numpy(tmp_path):
    """summarize.scheduler: the species means of maps read lazily from a map store (as the summarize job reads
    every shard's) computed by a dask worker in another process equal numpy's."""
    import dask.array as da
    from distributed import LocalCluster

    from traitpipe.traits.species import canvas_maps, scheduler, species_means

    rng = np.random.default_rng(0)
    raw = rng.random((6, 2, 3, 3)).astype(np.float32)
    raw[2, 1] = 0.0  # a map with no mass: left out of its species' mean
    transforms = np.tile(np.array([[0.5, 0, 0]], np.float32), (6, 1))
    sizes = np.full((6, 2), 16)
    order = np.tile([1, 0], (6, 1))  # position 0 holds map 1
    species = ["a", "b", "a", "b", "b", "a"]
    store = write_maps(tmp_path / "cam.zarr", [f"i{k}" for k in range(6)], {"cam": (raw, ("alpha", "y", "x"))}, {})
    lazy = canvas_maps(da.from_zarr(open_maps(store)["cam"]), transforms, sizes, order, 8)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with scheduler(cluster.scheduler_address):
            names, means, counts = species_means(lazy, species)
        assert any(prefix.startswith("from-zarr") for prefix in cluster.scheduler.task_prefixes)  # read there
    expected = []
    for name in ("a", "b"):
        maps = [place_maps(raw[i][[1, 0]], transforms[i], sizes[i], 8) for i in range(6) if species[i] == name]
        expected.append(np.stack([np.mean([m[k] / m[k].sum() for m in maps if m[k].sum() > 0], axis=0)
                                  for k in range(2)]))
    assert names == ["a", "b"] and counts.tolist() == [[2, 3], [3, 3]]  # position 0 holds map 1
    np.testing.assert_allclose(means, np.stack(expected), rtol=1e-5)
    np.testing.assert_allclose(means.sum(axis=(2, 3)), 1.0, rtol=1e-5)  # each mean is still a distribution


def test_the_report_names_random_weights_and_reads_as_sentences():
    from traitpipe.report.build import describe, render

    assert "puts 1.5% of its map's mass" in describe(
        {"method": "layercam", "alpha": 1.0, "metric": "trait_energy", "subset": "cryptic", "level": None,
         "value": 0.015, "n": 12})
    html = render({"run": {"run_id": "r<1>", "traitpipe_version": "0", "git_commit": "c", "config_hash": "h",
                           "platform": "p", "device": "cpu"}, "results": "results",
                   "warnings": ["sam2 ran with random weights"],
                   "collection": {"images": 1, "species": 1, "failures": 0, "cryptic": []},
                   "models": [{"name": "sam2", "used_by": "segment", "random": True, "weights": "random weights",
                               "sha256": "-"}], "evaluation": [], "part_iou": [],
                   "figures": {"evaluation": None, "tree": None}, "species": [], "queries": [], "figures_dir": "f"})
    assert "r&lt;1&gt;" in html  # escaped
    assert 'class="warning">random weights' in html and "sam2 ran with random weights" in html


def test_a_results_report_opens_in_a_real_browser(tmp_path):
    from traitpipe.report.browser import check_page, find_chromium
    from traitpipe.report.build import data_uri
    from traitpipe.report.figures import png, tree_figure
    from traitpipe.phylo.levels import read_tree

    if find_chromium() is None or shutil.which("chromedriver") is None:
        pytest.skip("no chromium or chromedriver on PATH: the report's browser check did not run "
                    "(apt-get install chromium chromium-driver)")
    good = data_uri(png(tree_figure(read_tree("((a:1,b:1):1,c:2);"), {"a": [("gradcam: head (80%)", True), ("interventions (classifier): wing (60%)", False)], "b": [("thorax", None)]})))
    page = tmp_path / "page.html"
    page.write_text(f'<!DOCTYPE html><html><body><img src="{good}"></body></html>')
    result = check_page(page, tmp_path / "shot.png")
    assert result["errors"] == [] and result["images"] == 1 and result["broken_images"] == []
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"
    page.write_text('<html><body><img src="data:image/png;base64,AAAA"><img src="https://example.org/a.png">'
                    '<script>console.error("x"); throw new Error("boom")</script></body></html>')
    result = check_page(page, tmp_path / "shot.png")
    assert len(result["broken_images"]) == 2 and result["images"] == 2
    assert sorted(e.rsplit(" ", 1)[-1] for e in result["errors"]) == ['"x"', "boom", "net::ERR_NAME_NOT_RESOLVED"]


def test_a_species_store_indexes_species(tmp_path):
    """The species store indexes species, not images."""
    write_maps(tmp_path / "s.zarr", ["a", "b"], {"mean": (np.zeros((2, 1, 4, 4), np.float32), ("alpha", "y", "x"))},
               {"provenance": {}}, index="species")
    group = open_maps(tmp_path / "s.zarr")
    assert group["species_id"][:].tolist() == ["a", "b"] and "image_id" not in group
    assert json.loads(json.dumps(dict(group.attrs))) == {"provenance": {}}


def test_resizing_maps_in_numpy_gives_torchs_bilinear_numbers():
    import torch
    import torch.nn.functional as F

    from traitpipe.traits.maps import resize_maps

    rng = np.random.default_rng(0)
    for shape, size in [((3, 2, 2), (64, 64)), ((2, 8, 8), (128, 97)), ((1, 7, 5), (3, 2)), ((2, 5, 9), (33, 200))]:
        raw = rng.random(shape).astype(np.float32)  # up, up unevenly, down, mixed
        expected = F.interpolate(torch.from_numpy(raw)[None], size=size, mode="bilinear", align_corners=False)[0]
        np.testing.assert_allclose(resize_maps(raw, size), expected.numpy(), atol=1e-5)


def test_specimen_panels_are_drawn_at_display_size_with_the_labels_where_they_belong(tmp_path):
    """A 1200 x 800 photograph is downsampled before drawing (issue 38), and SST's labels are still cut from the
    canvas by the photograph's own size: the part on the specimen's right half stays on the right."""
    from traitpipe.jobs.report import MapIndex, specimen_panels
    from traitpipe.report.figures import DISPLAY_SIDE

    canvas = np.zeros((1, 64, 64), np.uint8)  # the image fills rows 0..63 and columns 11..53 of the canvas
    canvas[0, :, 11:32], canvas[0, :, 32:54] = 1, 2
    write_maps(tmp_path / "segment.zarr", ["img"], {"part_labels": (canvas, ("y", "x")),
                                                    "canvas_transform": (np.array([[64 / 1200, 0, 11]]), ("t",)),
                                                    "image_size": (np.array([[1200, 800]]), ("s",))},
               {"provenance": {}})
    write_maps(tmp_path / "cam.zarr", ["img"], {"cam": (np.ones((1, 1, 4, 4), np.float16), ("alpha", "y", "x"))},
               {"provenance": {}, "method": "gradcam", "alphas": [None]})
    photograph = np.full((1200, 800, 3), 200, np.uint8)
    panels = specimen_panels(photograph, "img", MapIndex([str(tmp_path / "segment.zarr"), str(tmp_path / "cam.zarr")]),
                             None, 2, {"segment": False, "gradcam": False}, {"gradcam": "alphas"})
    assert [p.image.shape for p in panels] == [(DISPLAY_SIDE, 171, 3)] * 3
    labels, heat = panels[1].labels, panels[2].heat
    assert labels.shape == heat.shape == (DISPLAY_SIDE, 171)
    assert (labels[:, :80] == 1).mean() > 0.95 and (labels[:, 90:] == 2).mean() > 0.95
