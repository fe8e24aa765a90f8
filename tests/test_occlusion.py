"""Occlusion maps (traitpipe/explain/occlusion.py) and their job: a map product added by CONTRIBUTING's recipe."""

import numpy as np
import pandas as pd
import torch
from torch import nn

from traitpipe.explain.occlusion import occlusion_maps


def test_each_cell_is_the_logit_drop_when_its_square_is_filled_with_the_mean():
    """On a linear model, hiding a square drops the target's logit by that square's own contribution: each cell
    of the map (window = stride) is it, computed here without captum; rises are 0, as a CAM's ReLU makes them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    images, target = torch.randn(2, 3, 8, 8), torch.tensor([2, 0])
    maps = occlusion_maps(model, images, target, window=4, stride=4, per_eval=3)
    weights = model[1].weight.detach().reshape(3, 3, 8, 8)
    contribution = (weights[target] * images).sum(1)  # (B, 8, 8): each pixel's share of the target's logit
    expected = contribution.reshape(2, 2, 4, 2, 4).sum((2, 4)).clamp(min=0)  # per 4 x 4 square
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    assert (expected == 0).any() and (expected > 0).any()


def test_the_occlusion_job_maps_every_image_of_a_shard(small_collection, tmp_path):
    """The job of the product's registry entry: one map per image at the stride's grid in the product's store,
    one ``cams`` row per image with its prediction and faithfulness, as every CAM product has."""
    from traitpipe.config import canonical_json, load_config
    from traitpipe.jobs import JOBS
    from traitpipe.store.maps import open_maps
    from conftest import ingest_shards, write_config

    config = write_config(tmp_path, small_collection, occlusion={"enabled": True, "window": 16, "stride": 8},
                          shard_size=100)
    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(config)))
    images = ingest_shards(run_config, tmp_path)
    models = {name: str(tmp_path / name) for name in ("classifier.pt", "classifier.json")}
    JOBS["classifier"](["--config", str(run_config), "--images", *images, "--weights", models["classifier.pt"],
                        "--description", models["classifier.json"], "--evaluation", str(tmp_path / "e.parquet"),
                        "--failures", str(tmp_path / "f1.parquet")])
    JOBS["occlusion"](["--config", str(run_config), "--images", images[0], "--weights", models["classifier.pt"],
                       "--description", models["classifier.json"], "--maps", str(tmp_path / "maps.zarr"),
                       "--cams", str(tmp_path / "cams.parquet"), "--failures", str(tmp_path / "f2.parquet")])
    rows = pd.read_parquet(images[0])
    store, cams = open_maps(tmp_path / "maps.zarr"), pd.read_parquet(tmp_path / "cams.parquet")
    assert store["cam"].shape == (len(rows), 1, 4, 4) and store.attrs["alphas"] == [None]  # 32 px, stride 8
    maps = store["cam"][:].astype(np.float32)
    assert (maps >= 0).all() and (maps.reshape(len(rows), -1).max(1) > 0).all()
    assert sorted(cams["image_id"]) == sorted(rows["image_id"]) and cams["relative_drop"].notna().all()
