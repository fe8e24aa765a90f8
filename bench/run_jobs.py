"""The workflow's jobs on one synthetic collection, for the benches: a run config and each job's arguments.

One shard holds the whole collection (``shard_size`` above it), on the CPU; tiny models at 224 px and SAM 2
(random weights) at 128 px, or models of the size users run (:data:`USER_SIZE`). The jobs are
``traitpipe.jobs.<name>.main``, the code a rule runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from traitpipe.collection.manifest import load_manifest
from traitpipe.collection.shards import shard_rows
from traitpipe.config import canonical_json, load_config

SIZE = 224

#: Set-up steps first (each reads what an earlier one wrote), then the shard jobs.
ORDER = ("ingest", "classifier", "prompt_cam_train", "phylo_train", "segment", "explain", "prompt_cam", "codes")


#: Models of the size users run, for throughput: ViT-S/16 at 224 (classifier, Prompt-CAM), Phylo-NN at the
#: config's default widths, SAM 2.1 hiera_t at 512 px.
USER_SIZE = {"segment": {"image_size": 512, "canvas": 128},
             "classifier": {"arch": "vit_small_patch16_224", "kwargs": {}},
             "phylo": {"model": {}}}


def run_config(folder: Path, collection: Path, user_size: bool = False, device: str = "cpu") -> Path:
    """Write the run config (``folder/run.json``) of one collection and return its path: tiny models, or
    with ``user_size`` the models of :data:`USER_SIZE`, on ``device`` (the config's ``device``)."""
    config = {
        "collection": {"root": str(collection), "manifest": "manifest.csv", "phylogeny": "phylogeny.nwk",
                       "columns": {"specimen": "specimen_id", "mask": "mask", "ranks": ["family", "genus"]}},
        "results": str(folder / "results"), "shard_size": 100_000, "device": device,
        "segment": {"image_size": 128, "canvas": 128, "parts": "masks/parts.json"},
        "classifier": {"arch": "vit_tiny_patch16_224", "input_size": SIZE,
                       "kwargs": {"img_size": SIZE, "depth": 1, "embed_dim": 32, "num_heads": 2},
                       "train": {"epochs": 1, "batch_size": 32}},
        "explain": {"batch_size": 32, "methods": [{"name": "gradcam", "alphas": [None]}]},
        "prompt_cam": {"epochs": 1, "warmup_epochs": 1, "batch_size": 32},
        "phylo": {"image_size": 64, "batch_size": 32, "distances": [0.33, 0.5],
                  "model": {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16],
                            "z_channels": 16, "embed_dim": 8, "n_embed": 16, "norm_groups": 8, "hidden": 16,
                            "phylo_channels": 8, "code_dim": 4, "codes_per_level": 2, "n_codes": 16,
                            "nonphylo_levels": 3},
                  "train": {"base_epochs": 1, "epochs": 1, "batch_size": 32}},
    }
    if user_size:
        for section, settings in USER_SIZE.items():
            config[section].update(settings)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    path = folder / "run.json"
    path.write_text(canonical_json(load_config(folder / "config.yaml")))
    return path


def job_arguments(folder: Path, collection: Path) -> dict[str, list[str]]:
    """Each job's command-line arguments (after ``--config``), in :data:`ORDER`; writes the shard's rows file."""
    r = folder / "results"
    r.mkdir(parents=True, exist_ok=True)
    [rows] = shard_rows(load_manifest(json.loads((folder / "run.json").read_text())), 100_000).values()
    rows.to_parquet(r / "rows.parquet")
    manifest = pd.read_csv(collection / "manifest.csv", keep_default_na=False)
    references = [arg for _, row in manifest[manifest["mask"] != ""].iterrows()
                  for arg in ("--reference", row["species"], str(collection / row["path"]), str(collection / row["mask"]))]
    images, classifier = str(r / "images.parquet"), ["--weights", str(r / "classifier.pt"),
                                                      "--description", str(r / "classifier.json")]
    prompt_cam = ["--weights", str(r / "prompt_cam.pt"), "--description", str(r / "prompt_cam.json")]
    phylonn = ["--weights", str(r / "phylonn.pt"), "--description", str(r / "phylonn.json")]
    given_classifier = ["--classifier", str(r / "classifier.pt"), "--classifier-description", str(r / "classifier.json")]
    arguments = {
        "ingest": ["--rows", str(r / "rows.parquet"), "--images", images],
        "classifier": ["--images", images, *classifier, "--evaluation", str(r / "evaluation-classifier.parquet")],
        "prompt_cam_train": ["--images", images, *given_classifier, *prompt_cam,
                             "--evaluation", str(r / "evaluation-prompt_cam.parquet")],
        "phylo_train": ["--images", images, "--phylogeny", str(collection / "phylogeny.nwk"), *phylonn,
                        "--evaluation", str(r / "evaluation-phylo.parquet")],
        "segment": ["--images", images, *references, "--maps", str(r / "segment.zarr"),
                    "--parts", str(r / "parts.parquet")],
        "explain": ["--method", "gradcam", "--images", images, *classifier, "--maps", str(r / "gradcam.zarr"),
                    "--cams", str(r / "cams.parquet")],
        "prompt_cam": ["--images", images, *prompt_cam, *given_classifier, "--maps", str(r / "promptcam.zarr"),
                       "--heads", str(r / "heads.parquet")],
        "codes": ["--images", images, *phylonn, "--codes", str(r / "codes.parquet")],
    }
    return {job: ["--config", str(folder / "run.json"), *args, "--failures", str(r / f"failures-{job}.parquet")]
            for job, args in arguments.items()}
