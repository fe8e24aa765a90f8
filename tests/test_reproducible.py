"""Two runs of one config give the same weights, tables and maps: Prompt-CAM's and Phylo-NN's jobs (the workflow
tests that run a config twice leave them out to save time)."""

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
                     "--description", str(shared / "classifier.json"), "--evaluation", str(shared / "evaluation.parquet"),
                     "--failures", str(shared / "failures.parquet")])
    for run in ("first", "second"):
        r = tmp_path / run
        common = ["--config", str(run_config)]
        prompts = ["--weights", str(r / "prompt_cam.pt"), "--description", str(r / "prompt_cam.json")]
        phylonn = ["--weights", str(r / "phylonn.pt"), "--description", str(r / "phylonn.json")]
        prompt_cam_train.main([*common, "--images", *images, *given, *prompts, "--evaluation",
                               str(r / "evaluation-prompt_cam.parquet"), "--failures", str(r / "f1.parquet")])
        prompt_cam.main([*common, "--images", images[0], *prompts, *given, "--maps", str(r / "promptcam.zarr"),
                         "--heads", str(r / "heads.parquet"), "--failures", str(r / "f2.parquet")])
        phylo_train.main([*common, "--images", *images, "--phylogeny", str(small_collection / "phylogeny.nwk"),
                          *phylonn, "--evaluation", str(r / "evaluation-phylo.parquet"),
                          "--failures", str(r / "f3.parquet")])
        codes.main([*common, "--images", images[0], *phylonn, "--codes", str(r / "codes.parquet"),
                    "--failures", str(r / "f4.parquet")])

    first, second = tmp_path / "first", tmp_path / "second"
    assert len(list(first.rglob("*.parquet"))) == 8 and (first / "promptcam.zarr" / "zarr.json").is_file()
    assert result_differences(first, second) == []
    for weights in ("prompt_cam.pt", "phylonn.pt"):
        assert _same(*(torch.load(folder / weights, weights_only=True) for folder in (first, second))), weights

    # what the comparison sees: Phylo-NN trained on another seed has other weights
    other = tmp_path / "other.json"
    config = load_config(write_config(tmp_path, small_collection))
    config["phylo"]["train"]["seed"] = 1
    other.write_text(canonical_json(config))
    phylo_train.main(["--config", str(other), "--images", *images, "--phylogeny", str(small_collection / "phylogeny.nwk"),
                      "--weights", str(tmp_path / "seed1.pt"), "--description", str(tmp_path / "seed1.json"),
                      "--evaluation", str(tmp_path / "seed1.parquet"), "--failures", str(tmp_path / "f5.parquet")])
    assert not _same(torch.load(first / "phylonn.pt", weights_only=True),
                     torch.load(tmp_path / "seed1.pt", weights_only=True))


def _same(a, b) -> bool:
    """Two checkpoints (nested dicts of tensors) hold the same names and the same tensors, bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b)
