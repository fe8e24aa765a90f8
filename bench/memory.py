"""Peak memory of the training steps and of shard jobs, at 1x and 8x the images: it must not grow with the collection.

Two synthetic collections, 4 species at 224 px: 1x = 32 specimens per species (128 images), 8x = 256 (1,024
images); one shard each (shard_size above the collection), so a shard job sees 8x the images too. Same tiny
models, same settings (``run_jobs.py``). Each job (the workflow's own ``traitpipe job ...``) runs in a fresh
process; its peak resident memory (``ru_maxrss``) is read after it ends, and the largest DataLoader worker's
beside it. The SST segment job holds one species' label maps at a time (each image's own size, uint8); SAM 2
reads the frames as it tracks them.

Before the training steps streamed, 1,024 images at 224 px were a 616 MB float tensor in the job.

Goal: peak(8x) / peak(1x) <= 1.2 for every job. Last line: a JSON object with every ratio and the worst.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from run_jobs import ORDER, SIZE, job_arguments, run_config
from traitpipe.collection.synthetic import synthesize

SPECIES, PER_SPECIES, GROWTH, GOAL = 4, 32, 8, 1.2

#: Runs one job in this process and writes its peak RSS and its largest child's (MiB) to argv[1].
MEASURE = """
import json, resource, sys
from importlib import import_module
import_module("traitpipe.jobs." + sys.argv[2]).main(sys.argv[3:])
peak = {who: resource.getrusage(getattr(resource, who)).ru_maxrss / 1024 for who in ("RUSAGE_SELF", "RUSAGE_CHILDREN")}
open(sys.argv[1], "w").write(json.dumps(peak))
"""


def peak(job: str, arguments: list[str], folder: Path) -> dict[str, float]:
    """Run ``traitpipe job <job> <arguments>`` in a fresh process; its peak RSS and its largest worker's, MiB."""
    out = folder / f"{job}.peak.json"
    subprocess.run([sys.executable, "-c", MEASURE, str(out), job, *arguments], check=True, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def measure(folder: Path, per_species: int) -> dict[str, dict[str, float]]:
    """Peak memory of every job on a collection of ``per_species`` specimens per species."""
    collection = synthesize(folder / "collection", n_species=SPECIES, per_species=per_species, size=SIZE, seed=0)
    run_config(folder, collection)
    arguments = job_arguments(folder, collection)
    return {job: peak(job, arguments[job], folder) for job in ORDER}


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
