"""Planning cost: Snakemake dry run (DAG build) for manifests of 1,000 to 1,000,000 images.

Manifests are rows only (no image files: planning never reads images), with one
reference image and mask per species (empty files: the segment rules declare them as inputs,
so they must exist) and a trait concept per species (CLIP's concept prompts). Uses the demo config, with SAM 2
loaded rather than trained (training needs true part masks), every size with the default shard_size (auto:
traitpipe.plan.shard_size picks it from the collection's size and the jobs per shard; the demo config makes 15
jobs per shard). Goals, with the defaults: 100,000 images plan as at most 2,000 jobs in at most 30 seconds,
1,000,000 as at most 5,000 jobs in at most 60 seconds. Last line: a JSON object.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from traitpipe.collection.shards import shard_names
from traitpipe.config import validate_config
from traitpipe.plan import shard_size

REPO = Path(__file__).resolve().parents[1]
SIZES = (1_000, 10_000, 100_000, 1_000_000)
GOALS = {100_000: (2000, 30), 1_000_000: (5000, 60)}  # images: (jobs, seconds)


def make_manifest(folder: Path, n_images: int, seed: int = 0) -> Path:
    """A manifest of ``n_images`` rows over about n/100 species of uneven sizes."""
    rng = np.random.default_rng(seed)
    n_species = max(2, n_images // 100)
    species = rng.choice(n_species, size=n_images, p=rng.dirichlet(np.ones(n_species)))
    frame = pd.DataFrame({
        "path": [f"images/{i:07d}.jpg" for i in range(n_images)],
        "species": [f"Genus{s // 7:04d} species{s:05d}" for s in species],
        "genus": [f"Genus{s // 7:04d}" for s in species],
    })
    # one reference (support image and mask) per species and the part names: inputs of the segment
    # rules, so they must exist (a dry run never reads them)
    first = ~frame["species"].duplicated()
    frame["mask"] = np.where(first, [f"masks/{i:07d}.png" for i in range(n_images)], "")
    for folder_name in ("masks", "images"):
        (folder / folder_name).mkdir()
    for reference in frame.loc[first, ["path", "mask"]].to_numpy().ravel():
        (folder / reference).touch()
    (folder / "masks" / "parts.json").write_text('{"1": "body"}')
    concepts = {name: f"a spot number {i}" for i, name in enumerate(frame["species"].unique())}
    (folder / "concepts.json").write_text(json.dumps(concepts))
    path = folder / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def dry_run(folder: Path, n_images: int) -> dict:
    """Time one dry run with the default shard_size; return images, shard size, jobs, seconds and shards."""
    make_manifest(folder, n_images)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["collection"].update(root=str(folder), manifest="manifest.csv", phylogeny=None,
                                columns={"path": "path", "species": "species", "mask": "mask", "ranks": ["genus"]})
    config.pop("shard_size")
    config["segment"]["checkpoint"] = None  # a released SAM 2 in a real run; training needs true part masks
    config["evaluate"]["cryptic_pairs"] = None  # the synthetic collection's file
    config["results"] = str(folder / "results")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "traitpipe", "run", "--config", str(folder / "config.yaml"),
                           "--", "-n", "--quiet", "rules"], cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    total = re.search(r"^total\s+(\d+)", done.stdout + done.stderr, re.MULTILINE)
    species = pd.read_csv(folder / "manifest.csv")["species"]
    size = shard_size(validate_config(config), species)
    shards = shard_names(species, size)
    return {"images": n_images, "shard_size": size, "jobs": int(total.group(1)), "seconds": round(seconds, 2),
            "shards": len(shards)}


def main() -> None:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            runs.append(dry_run(folder, n))
            print(f"{n:>9} images, shard_size {runs[-1]['shard_size']:>5}: {runs[-1]['jobs']:>5} jobs planned in "
                  f"{runs[-1]['seconds']:6.2f} s", flush=True)
    met = {str(run["images"]): run["jobs"] <= GOALS[run["images"]][0] and run["seconds"] <= GOALS[run["images"]][1]
           for run in runs if run["images"] in GOALS}
    print(json.dumps({**runs[-1], "goals": {str(k): {"jobs": j, "seconds": t} for k, (j, t) in GOALS.items()},
                      "meets_goal": all(met.values()), "met": met, "runs": runs}))


if __name__ == "__main__":
    main()
