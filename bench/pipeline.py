"""Throughput of the shard jobs: one shard end to end, as a fraction of the bare model compute on the same images.

One synthetic shard of 512 images at 224 px, the default shard_size (4 species x 128; ``--per-species`` sets the 128;
about 3 hours on a 2-core CPU, most of them for the segment job's SAM 2 at 512 px), on the CPU (``--device``
cuda: a GPU, the jobs' device too), models of the size users run
(``run_jobs.USER_SIZE``: ViT-S/16 trained here for one epoch, Phylo-NN at its default widths, SAM 2.1 hiera_t
with random weights at 512 px). For each shard job (segment, explain, prompt_cam, codes):

(a) end to end: the job's ``main`` (the code a rule runs) in this process, best of two after a warm-up: read,
    decode, preprocess, compute, write Zarr and Parquet. Python start-up and imports are left out: they
    are paid once per job, not per image.
(b) bare compute: the same model calls on the same images, already decoded and preprocessed in memory (on
    the device, but for SST's frames and Phylo-NN's codes, whose loops copy each frame or batch over).

Ratio = (images/s of a) / (images/s of b) = time(b) / time(a). Goal: >= 0.8 for every job. One JSON line
per job, then a last line with every ratio and the worst.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from cam import best_time
from run_jobs import ORDER, job_arguments, run_config
from traitpipe.collection.synthetic import synthesize
from traitpipe.jobs.images import image_files, load_pixels, read_rows
from traitpipe.jobs.masks import load_support
from traitpipe.models.classes import explained_classes
from traitpipe.jobs.devices import resolve_device
from traitpipe.models.transforms import to_batch

SPECIES, PER_SPECIES, GOAL, REPEATS = 4, 128, 0.8, 2
SHARD_JOBS = ("segment", "explain", "prompt_cam", "codes")


def bare_compute(job: str, config: dict, r: Path, rows, pixels: list[np.ndarray], references: dict):
    """A function running ``job``'s model calls on ``pixels`` already in memory (models loaded before), on the
    config's device."""
    device = resolve_device(config["device"])
    if job == "segment":
        from traitpipe.segment.backends import load_segmenter
        from traitpipe.collection.references import part_names

        segmenter = load_segmenter(config["segment"], device)
        names = part_names(config["segment"]["parts"], config["collection"]["root"])
        files, work = image_files(config, rows), []
        for species, group in rows.groupby("species", sort=True):
            support, labels, image_file, _ = load_support(config, species, references, names)
            work.append((support, labels, [pixels[i] for i in group.index if files[i] != image_file]))
        return lambda: [list(segmenter.segment(support, labels, frames)) for support, labels, frames in work]
    if job == "codes":
        from traitpipe.jobs.models import load_phylonn
        from traitpipe.phylo.training import generate_codes

        base, model, _ = load_phylonn(r / "phylonn.pt", r / "phylonn.json", config["phylo"], device)
        images = to_batch(pixels, config["phylo"]["image_size"], [0.5] * 3, [0.5] * 3)
        return lambda: generate_codes(base, model, images, batch_size=config["phylo"]["batch_size"], device=device)
    if job == "explain":
        from traitpipe.explain.batch import explain_batch
        from traitpipe.explain.cam import default_layers
        from traitpipe.jobs.models import load_classifier

        model, meta = load_classifier(r / "classifier.pt", r / "classifier.json", device)
        settings = config["explain"]
        size = settings["batch_size"]
        targets = torch.from_numpy(explained_classes(rows["species"], meta.classes, settings["target"]))
        batches = [(to_batch(pixels[s:s + size], meta.input_size, meta.mean, meta.std).to(device),
                    targets[s:s + size].to(device)) for s in range(0, len(pixels), size)]
        layers = default_layers(model)
        return lambda: [explain_batch(model, batch, layers, method="gradcam", alphas=[None],
                                      n_compare=settings["n_compare"], fraction=settings["faithfulness_fraction"],
                                      target=target) for batch, target in batches]
    from traitpipe.jobs.models import load_prompt_cam

    model, meta = load_prompt_cam(r / "classifier.pt", r / "classifier.json", r / "prompt_cam.pt")
    model.to(device).eval()
    classes = json.loads((r / "prompt_cam.json").read_text())["classes"]
    size = config["prompt_cam"]["batch_size"]
    targets = torch.from_numpy(explained_classes(rows["species"], classes, config["explain"]["target"]))
    batches = [(to_batch(pixels[s:s + size], meta.input_size, meta.mean, meta.std).to(device),
                targets[s:s + size].to(device)) for s in range(0, len(pixels), size)]

    def run():
        with torch.no_grad():
            return [model.explain(batch, target) for batch, target in batches]
    return run


def synchronized(run, device: torch.device):
    """``run``, then a wait for ``device``'s queued work (none on a CPU): a timing covers the work, not its launch."""
    def run_and_wait():
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run_and_wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-species", type=int, default=PER_SPECIES,
                        help=f"images per species (default {PER_SPECIES}: a shard of the default shard_size, 512); "
                             "fewer for a quick look, where a job's fixed costs weigh more")
    parser.add_argument("--jobs", nargs="+", choices=SHARD_JOBS, default=list(SHARD_JOBS),
                        help="the shard jobs to time (default: all)")
    parser.add_argument("--device", default="cpu",
                        help="the jobs' and the bare compute's device: cpu (default), cuda, auto")
    parser.add_argument("--repeats", type=lambda v: max(1, int(v)), default=REPEATS,
                        help=f"timed runs of each, the fastest kept (default {REPEATS})")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each first (default 1); 0 with --repeats 1 times the segment job's "
                             "512 frames once each way (about 30 minutes a run on a 2-core CPU), one-time costs "
                             "(a first call's set-up) counted in both")
    options = parser.parse_args()
    per_species = options.per_species
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        collection = synthesize(folder / "collection", n_species=SPECIES, per_species=per_species, size=224, seed=0)
        config_file = run_config(folder, collection, user_size=True, device=options.device)
        arguments = job_arguments(folder, collection)
        for job in ORDER[:4]:  # ingest and the models the shard jobs use
            import_module(f"traitpipe.jobs.{job}").main(arguments[job])
        config = json.loads(config_file.read_text())
        device = resolve_device(config["device"])  # the GPU the jobs claim, when there are several
        r = folder / "results"
        rows = read_rows(str(r / "images.parquet"))
        pixels, ok, _ = load_pixels(config, rows)
        assert ok.all()
        given = arguments["segment"]
        references = {given[i + 1]: (given[i + 2], given[i + 3]) for i, a in enumerate(given) if a == "--reference"}
        for job in options.jobs:
            job_main = import_module(f"traitpipe.jobs.{job}").main
            whole = best_time(synchronized(lambda: job_main(arguments[job]), device), options.repeats, options.warmup)
            bare = best_time(synchronized(bare_compute(job, config, r, rows, pixels, references), device),
                             options.repeats, options.warmup)
            results[job] = {"job": job, "device": str(device), "images": len(rows),
                            "end_to_end_images_per_s": round(len(rows) / whole, 1),
                            "bare_images_per_s": round(len(rows) / bare, 1), "ratio": round(bare / whole, 3),
                            "goal": GOAL}
            print(json.dumps(results[job]), flush=True)
    ratios = {job: result["ratio"] for job, result in results.items()}
    worst = min(ratios, key=ratios.get)
    print(json.dumps({"ratio": ratios, "worst": worst, "worst_ratio": ratios[worst], "goal": GOAL,
                      "met": ratios[worst] >= GOAL}))


if __name__ == "__main__":
    main()
