"""Peak memory of the training steps and of shard jobs, at 1x and 8x the images: it must not grow with the collection.

Two synthetic collections, 4 species at 224 px: 1x = 32 specimens per species (128 images), 8x = 256 (1,024
images); one shard each (shard_size above the collection), so a shard job sees 8x the images too. Same tiny
models, same settings. Each job (the workflow's own ``traitpipe job ...``) runs in a fresh process; its peak
resident memory (``ru_maxrss``) is read after it ends, and the largest DataLoader worker's beside it.

Before the training steps streamed, 1,024 images at 224 px were a 616 MB float tensor in the job.

Goal: peak(8x) / peak(1x) <= 1.2 for every job. Last line: a JSON object with every ratio and the worst.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from traitpipe.collection.synthetic import synthesize
from traitpipe.config import canonical_json, load_config

SPECIES, SIZE, PER_SPECIES, GROWTH, GOAL = 4, 224, 32, 8, 1.2

#: Runs one job in this process and writes its peak RSS and its largest child's (MiB) to argv[1].
MEASURE = """
import json, resource, sys
from importlib import import_module
import_module("traitpipe.jobs." + sys.argv[2]).main(sys.argv[3:])
peak = {who: resource.getrusage(getattr(resource, who)).ru_maxrss / 1024 for who in ("RUSAGE_SELF", "RUSAGE_CHILDREN")}
open(sys.argv[1], "w").write(json.dumps(peak))
"""


def run_config(folder: Path, collection: Path) -> Path:
    """The run config of one collection: tiny models at 224 px, one shard, CPU."""
    config = {
        "collection": {"root": str(collection), "manifest": "manifest.csv", "phylogeny": "phylogeny.nwk",
                       "columns": {"specimen": "specimen_id", "ranks": ["family", "genus"]}},
        "results": str(folder / "results"), "shard_size": 100_000, "device": "cpu",
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
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    path = folder / "run.json"
    path.write_text(canonical_json(load_config(folder / "config.yaml")))
    return path


def peak(folder: Path, job: str, *args: str) -> dict[str, float]:
    """Run ``traitpipe job <job> <args>`` in a fresh process; its peak RSS and its largest worker's, MiB."""
    out = folder / f"{job}.peak.json"
    subprocess.run([sys.executable, "-c", MEASURE, str(out), job, "--config", str(folder / "run.json"), *args],
                   check=True, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def measure(folder: Path, per_species: int) -> dict[str, dict[str, float]]:
    """Peak memory of every measured job on a collection of ``per_species`` specimens per species."""
    collection = synthesize(folder / "collection", n_species=SPECIES, per_species=per_species, size=SIZE, seed=0)
    run_config(folder, collection)
    r = folder / "results"
    (r / "rows").mkdir(parents=True)
    from traitpipe.collection.manifest import load_manifest
    from traitpipe.collection.shards import shard_rows

    [rows] = shard_rows(load_manifest(json.loads((folder / "run.json").read_text())), 100_000).values()
    rows.to_parquet(r / "rows" / "0.parquet")
    images = str(r / "images.parquet")
    peaks = {"ingest": peak(folder, "ingest", "--rows", str(r / "rows" / "0.parquet"), "--images", images,
                            "--failures", str(r / "f-ingest.parquet"))}
    peaks["classifier"] = peak(folder, "classifier", "--images", images, "--weights", str(r / "classifier.pt"),
                               "--description", str(r / "classifier.json"), "--evaluation", str(r / "e1.parquet"),
                               "--failures", str(r / "f1.parquet"))
    peaks["prompt_cam_train"] = peak(
        folder, "prompt_cam_train", "--images", images, "--classifier", str(r / "classifier.pt"),
        "--classifier-description", str(r / "classifier.json"), "--weights", str(r / "prompt_cam.pt"),
        "--description", str(r / "prompt_cam.json"), "--evaluation", str(r / "e2.parquet"),
        "--failures", str(r / "f2.parquet"))
    peaks["phylo_train"] = peak(
        folder, "phylo_train", "--images", images, "--phylogeny", str(collection / "phylogeny.nwk"),
        "--weights", str(r / "phylonn.pt"), "--description", str(r / "phylonn.json"),
        "--evaluation", str(r / "e3.parquet"), "--failures", str(r / "f3.parquet"))
    peaks["codes (shard)"] = peak(
        folder, "codes", "--images", images, "--weights", str(r / "phylonn.pt"),
        "--description", str(r / "phylonn.json"), "--codes", str(r / "codes.parquet"),
        "--failures", str(r / "f4.parquet"))
    peaks["explain (shard)"] = peak(
        folder, "explain", "--method", "gradcam", "--images", images, "--weights", str(r / "classifier.pt"),
        "--description", str(r / "classifier.json"), "--maps", str(r / "gradcam.zarr"),
        "--cams", str(r / "cams.parquet"), "--failures", str(r / "f5.parquet"))
    return peaks


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(Path(tmp) / "1x", PER_SPECIES)
        large = measure(Path(tmp) / f"{GROWTH}x", PER_SPECIES * GROWTH)
    print(f"{'job':<18}{'1x MiB':>10}{f'{GROWTH}x MiB':>10}{'ratio':>8}{'worker 1x':>11}{f'worker {GROWTH}x':>11}")
    ratios = {}
    for job in small:
        a, b = small[job]["RUSAGE_SELF"], large[job]["RUSAGE_SELF"]
        ratios[job] = round(b / a, 3)
        print(f"{job:<18}{a:>10.0f}{b:>10.0f}{b / a:>8.2f}{small[job]['RUSAGE_CHILDREN']:>11.0f}"
              f"{large[job]['RUSAGE_CHILDREN']:>11.0f}")
    worst = max(ratios, key=ratios.get)
    print(json.dumps({"images_1x": SPECIES * PER_SPECIES, "images_8x": SPECIES * PER_SPECIES * GROWTH,
                      "peak_ratio": ratios, "worst": worst, "worst_ratio": ratios[worst], "goal": GOAL,
                      "met": ratios[worst] <= GOAL}))


if __name__ == "__main__":
    main()
