"""Two runs of one config give the same weights, tables and maps: Prompt-CAM's and Phylo-NN's jobs (the workflow
tests that run a config twice leave them out to save time)."""

import random

import numpy as np
import torch

from conftest import ingest_shards, result_differences, write_config
from traitpipe.config import canonical_json, load_config


def test_prompt_cam_and_phylonn_jobs_twice_give_the_same_weights_tables_and_maps(small_collection, tmp_path):
    from traitpipe.jobs import classifier, codes, phylo_train, prompt_cam, prompt_cam_train

    run_config = tmp_path / "run.json"
    run_config.write_text(canonical_json(load_config(write_config(tmp_path, small_collection))))
    images = ingest_shards(run_config, tmp_path / "ingest")
    shared = tmp_path / "shared"  # the classifier both runs' Prompt-CAM stands on
    given = ["--classifier", str(shared / "classifier.pt"), "--classifier-description", str(shared / "classifier.json")]
    classifier.main(["--config", str(run_config), "--images", *images, "--weights", str(shared / "classifier.pt"),
                     "--description", str(shared / "classifier.json"),
                     "--evaluation", str(shared / "evaluation.parquet"), "--failures", str(shared / "failures.parquet")])
    tree = str(small_collection / "phylogeny.nwk")
    for run in ("first", "second"):
        r = tmp_path / run
        common = ["--config", str(run_config)]
        prompts = ["--weights", str(r / "prompt_cam.pt"), "--description", str(r / "prompt_cam.json")]
        phylonn = ["--weights", str(r / "phylonn.pt"), "--description", str(r / "phylonn.json")]
        jobs = [(prompt_cam_train, ["--images", *images, *given, *prompts,
                                    "--evaluation", str(r / "evaluation-prompt_cam.parquet")]),
                (prompt_cam, ["--images", images[0], *prompts, *given, "--maps", str(r / "promptcam.zarr"),
                              "--heads", str(r / "heads.parquet")]),
                (phylo_train, ["--images", *images, "--phylogeny", tree, *phylonn,
                               "--evaluation", str(r / "evaluation-phylo.parquet")]),
                (codes, ["--images", images[0], *phylonn, "--codes", str(r / "codes.parquet")])]
        for k, (job, arguments) in enumerate(jobs):
            if run == "second":  # each job starts from other global generator states: it must seed what it draws
                random.random(), np.random.rand(k + 1), torch.rand(k + 1)
            job.main([*common, *arguments, "--failures", str(r / f"failures-{k}.parquet")])

    first, second = tmp_path / "first", tmp_path / "second"
    assert len(list(first.rglob("*.parquet"))) == 8 and (first / "promptcam.zarr" / "zarr.json").is_file()
    assert result_differences(first, second) == []
    for weights in ("prompt_cam.pt", "phylonn.pt"):
        assert _same(*(torch.load(folder / weights, weights_only=True) for folder in (first, second))), weights


def _same(a, b) -> bool:
    """Two checkpoints (nested dicts of tensors) hold the same names and the same tensors, bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b)
