"""The workflow end to end through the command line, as a user runs it."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml

from traitpipe.cli import DEMO_COLLECTION, DEMO_CONFIG, DEMO_PARAMS
from traitpipe.collection import synthesize
from traitpipe.models.clip import TINY
from traitpipe.models.checkpoints import sha256_file
from traitpipe.store import open_maps
from traitpipe.store.cards import ModelCard

from conftest import write_config, write_dwca, write_parquet_images
from test_progress import progress_lines


#: Snakemake arguments of the tests' runs: one thread per job, so the 2-core test machine runs two jobs at once
#: (a tiny job is mostly Python start-up; a run of the small collection takes 72 s instead of 114 s). Not with
#: a named profile or threads named by the test: those threads are what such a test checks.
ONE_THREAD = ["--max-threads", "1"]
#: The segment section of the tests that check what happens around SST (failures, reruns, a kill), not SAM 2
#: itself: the small SAM 2 (segment/configs/sam2_small.yaml, random weights) tracks and tunes several times
#: faster than sam2.1_hiera_t, which test_run_then_query and tests/test_sst.py run.
SMALL_SAM2 = {"config": "sam2_small", "image_size": 128, "canvas": 64, "parts": "masks/parts.json"}


def _open_without_a_warning(stores):
    """Each map store opens with zarr, xarray and dask as their users open one, with no warning."""
    import dask.array
    import xarray

    assert stores
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for store in stores:
            dataset = xarray.open_zarr(store).load()  # consolidated metadata: no fall-back warning
            names = sorted(open_maps(store).array_keys())
            assert sorted(dataset.data_vars) == names, store
            assert [dask.array.from_zarr(str(store), component=name).shape for name in names] == [
                dataset[name].shape for name in names]


def traitpipe(*args, cwd):
    if args[0] == "run" and "--profile" not in args and "--max-threads" not in args:
        args = (*args, *([] if "--" in args else ["--"]), *ONE_THREAD)
    return subprocess.run([sys.executable, "-m", "traitpipe", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_dry_run_of_the_demo_config(tmp_path):
    synthesize(tmp_path / DEMO_COLLECTION, **DEMO_PARAMS)
    done = traitpipe("run", "--config", str(DEMO_CONFIG), "--", "-n", "--quiet", "rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ingest" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()  # a dry run writes nothing, not even the run config
    from traitpipe.cli import SNAKEFILE

    # linted as a conda user runs it (--sdm conda: every rule names its environment; without, the rules run in
    # the environment traitpipe is installed into, and name none)
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile",
                           str(DEMO_CONFIG), "--lint", "--sdm", "conda"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_plain_snakemake_reads_config_yaml_where_it_runs_and_traitpipe_run_replaces_it(small_collection, tmp_path):
    """As Snakemake users run a workflow: `snakemake --cores N` with the Snakefile's default configfile,
    config/config.yaml where it runs; `traitpipe run --config` replaces that file whole (a key only it sets, INTR
    on here, does not leak into the user's run)."""
    from traitpipe.cli import SNAKEFILE

    (tmp_path / "config").mkdir()
    default = yaml.safe_load(write_config(tmp_path, small_collection).read_text())
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({**default, "intr": {"enabled": True}}))
    plain = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--cores", "1", "-n",
                            "--quiet", "rules"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "intr_train" in plain.stdout + plain.stderr
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(default))
    done = traitpipe("run", "--config", str(mine), "--", "-n", "--quiet", "rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ingest" in done.stdout + done.stderr and "intr_train" not in done.stdout + done.stderr


def test_an_installed_traitpipe_runs_the_workflow_from_any_folder(small_collection, tmp_path):
    """pip install . (not editable) into a fresh environment: the workflow ships inside the package, and
    traitpipe run works from a folder that is not the source tree (its ingest jobs run); so does traitpipe profile."""
    import site
    import sysconfig

    from traitpipe.cli import REPO

    wheels, env = tmp_path / "wheels", tmp_path / "env"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q", "--no-deps",
                    *map(str, wheels.glob("traitpipe-*.whl"))], check=True, capture_output=True)
    # the dependencies from this environment; traitpipe itself from the new one (a .pth file is not read here). The
    # standard library first, as in any environment: img2dataset's requirements install the old dataclasses
    # backport, whose dataclasses.py would otherwise hide Python's own
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([sysconfig.get_paths()["stdlib"], *site.getsitepackages()])}
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    config = write_config(folder, small_collection)
    where = subprocess.run([str(env / "bin" / "python"), "-c", "import traitpipe; print(traitpipe.__file__)"],
                           cwd=folder, env=environ, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(env))
    done = subprocess.run([str(env / "bin" / "traitpipe"), "run", "--config", str(config), "--", "--until", "ingest"],
                          cwd=folder, env=environ, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(env / "lib") in done.stderr  # Snakemake ran the installed package's workflow
    assert len(list((folder / "results" / "tables" / "images").glob("part-*.parquet"))) == 4  # one per species
    # the cluster profile, to edit: a copy of the one the package ships, never over an existing folder
    copy = [str(env / "bin" / "traitpipe"), "profile", "slurm", "my-slurm"]
    done = subprocess.run(copy, cwd=folder, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--profile my-slurm" in done.stdout, done.stderr
    assert (folder / "my-slurm" / "config.yaml").read_text() == (REPO / "workflow/profiles/slurm/config.yaml").read_text()
    done = subprocess.run(copy, cwd=folder, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "my-slurm exists" in done.stderr


GPU_RULES = {"sam2_train", "sst_finetune", "segment", "classifier", "explain", "prompt_cam_train", "prompt_cam",
             "intr_train", "intr", "clip_model", "clip", "phylo_train", "codes", "part_effects"}


def test_slurm_profile_asks_for_gpus_on_exactly_the_gpu_rules(tmp_path):
    """A dry run through the SLURM executor with the slurm profile: each job's resources as sbatch gets them."""
    from traitpipe.cli import SNAKEFILE

    synthesize(tmp_path / DEMO_COLLECTION, **DEMO_PARAMS)
    profile = SNAKEFILE.parent / "profiles" / "slurm"
    done = traitpipe("run", "--config", str(DEMO_CONFIG), "--", "-n", "-p", "--profile", str(profile),
                     "--slurm-no-account", "--slurm-status-command", "squeue", "--config", "device=auto",
                     cwd=tmp_path)  # the demo's device: cpu would ask for no GPU
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "workflow specific profile" not in output  # the one-machine profile is not merged over it
    resources = {}
    for job in re.split(r"\n(?:local)?rule ", output)[1:]:
        rule = job.split(":", 1)[0]
        found = re.search(r"\n\s+resources: (.*)", job)
        if rule != "all":
            resources.setdefault(rule, []).append(dict(item.split("=", 1) for item in found.group(1).split(", ")))
    assert set(resources) >= GPU_RULES | {"ingest", "cam_parts", "summarize", "evaluate", "phylo_eval", "report"}
    for rule, jobs in resources.items():
        for job in jobs:
            assert (job.get("gpu") == "1") == (rule in GPU_RULES), (rule, job)
            assert job["slurm_partition"] == ("gpu" if rule in GPU_RULES else "cpu"), (rule, job)
    threads = {line.split()[2]: int(line.rsplit(" ", 1)[1]) for line in
               re.findall(r"traitpipe job \w+ .*?--threads \d+", output)}
    assert threads and set(threads.values()) == {8}  # the profile's set-threads, not the submitting machine's cores

    settings = yaml.safe_load((profile / "config.yaml").read_text())
    for rule, values in settings["set-resources"].items():  # a retried job gets more memory and time
        for key in ("mem_mb", "runtime"):
            assert eval(values[key], {"attempt": 2}) == 2 * eval(values[key], {"attempt": 1}), (rule, key)


def test_config_threads_sets_each_model_jobs_threads(small_collection, tmp_path):
    """By default each model job gets every core of the run (one at a time, feeding a GPU); threads.default: 1
    one core each, so that a CPU-only machine runs as many side by side as it has cores; threads.<step> one step."""
    for threads, expected in (({}, {}), ({"default": 1, "segment": None, "codes": 2}, {"segment": 4, "codes": 2})):
        config = write_config(tmp_path, small_collection, threads=threads)
        done = traitpipe("run", "--config", str(config), "--", "-n", "-p", "--cores", "4", "--max-threads", "4",
                         cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        jobs = dict(re.findall(r"traitpipe job (\w+) .*?--threads (\d+)", done.stdout + done.stderr))
        assert {"classifier", "explain", "segment", "phylo_train", "codes"} <= set(jobs)
        default = threads.get("default") or 4
        assert {job: int(n) for job, n in jobs.items()} == {job: expected.get(job, default) for job in jobs}, threads


def test_run_then_query(collection_copy, tmp_path):
    """The whole workflow on a collection whose images are a binary column of Parquet files (the manifest's other
    columns beside them), read by every step that reads images: the same results as from image files."""
    write_parquet_images(collection_copy, collection_copy / "pq")
    config = write_config(tmp_path, collection_copy, shard_size=10)  # two shards of two species
    raw = yaml.safe_load(config.read_text())
    raw["collection"]["manifest"] = "pq"
    raw["collection"]["columns"]["image"] = "image"
    raw["intr"] = {"enabled": True, "backbone": "test_resnet", "d_model": 16, "nheads": 2, "enc_layers": 1,
                   "dec_layers": 1, "dim_feedforward": 32, "input_size": 64, "epochs": 2, "batch_size": 8}
    # a tiny CLIP trained here on the concept prompts alone (test_clip runs the species prompts' jobs)
    raw["clip"] = {"enabled": True, "checkpoint": "train", "prompts": {"species": None, "concepts": "concepts.json"},
                   "model": {**TINY, "vision_cfg": {**TINY["vision_cfg"], "image_size": 64, "patch_size": 16}},
                   "train": {"epochs": 2, "batch_size": 8}}
    config.write_text(yaml.safe_dump(raw))
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # a line per finished step, counting up to the last (the all rule); no rule dumps
    steps = progress_lines(done.stderr)
    assert [int(done) for done, *_ in steps] == list(range(1, len(steps) + 1)) and steps[-1][1:] == (
        str(len(steps)), "100", "all") and "rule ingest:" not in done.stderr
    assert {step.split()[0] for *_, step in steps} >= {"ingest", "classifier", "explain", "intr", "clip", "report"}
    results = str(tmp_path / "results")
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select bool_and(regexp_matches(path, '^pq/images-[01]\\.parquet#image/[0-9]+$')) as ok "
                     "from images", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"ok": True}]
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select species, count(*) as n from images group by 1 order by 1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 4 and all(row["n"] == 5 for row in rows)
    done = traitpipe("query", "--results", results, "select count(*) as n from failures", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["n", "0"]
    done = traitpipe("query", "--results", results, "select * from nowhere", cwd=tmp_path)
    assert done.returncode == 2 and "tables in" in done.stderr and "images" in done.stderr
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select alpha, count(*) as n, min(len(compared)) as k, "
                     "bool_and(abs(relative_drop - ((p_target - p_target_masked) - (p_similar - p_similar_masked)))"
                     " < 1e-6) as rd, bool_and(similar_class <> target) as d, "
                     "bool_and(alpha is null or similar_class = compared[1]) as first, "
                     "bool_and(abs(mask_fraction - 0.05) < 1e-6) as fraction from cams group by 1 order by 1 nulls first",
                     cwd=tmp_path)
    assert json.loads(done.stdout) == [{"alpha": None, "n": 60, "k": 0, "rd": True, "d": True, "first": True,
                                        "fraction": True},  # Grad-CAM's, INTR's and CLIP's
                                       {"alpha": 1.0, "n": 40, "k": 3, "rd": True, "d": True, "first": True,
                                        "fraction": True}]
    done = traitpipe("query", "--results", results, "--format", "json",  # maps explain the true class
                     "select bool_and(coalesce(c.target_species = i.species, false) and c.target_source = 'true') "
                     "as true, "
                     "count(*) as n from cams c join images i using (image_id)", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"true": True, "n": 100}]
    done = traitpipe("query", "--results", results, "--format", "json",  # so do Prompt-CAM's heads
                     "select bool_and(h.species = i.species and h.target_source = 'true') as true "
                     "from prompt_heads h join images i using (image_id)", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"true": True}]
    stores = sorted((tmp_path / "results" / "maps").glob("*/shard-*.zarr"))
    assert len(stores) == 2 * 5  # segment, gradcam, promptcam, intr and clip-concept-gradcam of 2 shards
    _open_without_a_warning(sorted((tmp_path / "results" / "maps").glob("**/*.zarr")))
    maps = sorted((tmp_path / "results" / "maps" / "cam-gradcam").glob("shard-*.zarr"))
    group = open_maps(maps[0])
    assert group["cam"].shape[1:] == (2, 2, 2) and group["cam"].dtype == np.float16
    assert group.attrs["alphas"] == [None, 1.0] and group.attrs["provenance"]["models"]["classifier"]["sha256"]
    assert group.attrs["provenance"]["precision"] == "float32"  # every stage but SST defaults to float32
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select count(*) as n, count(distinct image_id) as images, count(distinct part) as parts, "
                     "sum((frame_index = 0)::int) as support_rows from parts", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"n": 140, "images": 20, "parts": 7, "support_rows": 28}]
    labels = open_maps(tmp_path / "results" / "maps" / "segment" / "shard-00000.zarr")
    assert labels["part_labels"].shape[1:] == (64, 64) and labels.attrs["random_weights"] is True
    assert labels["part_labels"].metadata.dimension_names == ("image", "y", "x")
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image_label import ImageLabel

    label_image = open_ome_zarr(labels)  # validates the store as OME-Zarr: NGFF viewers find the array and parts
    assert isinstance(label_image, ImageLabel) and label_image.attributes.ome.version == "0.5"
    assert {p.label_value: p.model_extra["part"] for p in label_image.attributes.ome.image_label.properties} == {
        0: "background", **{int(k): v for k, v in labels.attrs["parts"].items()}}
    assert labels.attrs["provenance"]["precision"] == "float32"  # SST's "auto": bfloat16 on CUDA only
    assert labels["image_size"][0].tolist() == [64, 64] and labels["canvas_transform"][0].tolist() == [1.0, 0, 0]
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select count(*) as n, min(len(phylo_codes)) as p, max(len(nonphylo_codes)) as q from codes",
                     cwd=tmp_path)
    assert json.loads(done.stdout) == [{"n": 20, "p": 6, "q": 6}]  # 2 codes x 3 levels each
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select codes, level, count(*) as pairs from species_distances group by all order by all",
                     cwd=tmp_path)
    assert json.loads(done.stdout) == [{"codes": "nonphylo", "level": 2, "pairs": 6}] + [
        {"codes": "phylo", "level": k, "pairs": 6} for k in range(3)]
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select stage, count(*) as n from evaluation group by 1 order by 1", cwd=tmp_path)
    # each model: top-1 accuracy on the training and the held-out images, and on the held-out images of the pair
    assert json.loads(done.stdout) == [{"stage": "classifier", "n": 3}, {"stage": "clip", "n": 3},
                                       {"stage": "evaluate", "n": 114},
                                       {"stage": "intr", "n": 3}, {"stage": "phylo_train", "n": 6},
                                       {"stage": "phylonn", "n": 4}, {"stage": "prompt_cam", "n": 3}]
    done = traitpipe("query", "--results", results, "--format", "json",  # the scores against the planted truth
                     "select method, alpha, list(distinct metric order by metric) as metrics, "
                     "list(distinct subset order by subset) as subsets from evaluation where stage = 'evaluate' "
                     "and part is null group by all order by all", cwd=tmp_path)
    maps = ["part_effect_spearman", "part_effect_top1", "relative_drop@0.05", "relative_drop_own@0.05",
            "trait_energy", "trait_part", "trait_pointing"]
    both = ["all", "cryptic"]
    assert json.loads(done.stdout) == [
        {"method": "clip-concept-gradcam", "alpha": 1.0, "metrics": maps, "subsets": both},
        {"method": "clip-concept-gradcam", "alpha": None, "metrics": maps + ["zero_shot_accuracy"], "subsets": both},
        {"method": "gradcam", "alpha": 1.0, "metrics": maps, "subsets": both},
        {"method": "gradcam", "alpha": None, "metrics": maps, "subsets": both},
        # the part each model's own interventions name, scored as a map's is
        *({"method": f"interventions-{model}", "alpha": None, "metrics": ["trait_part"], "subsets": both}
          for model in ("classifier", "clip-concept", "intr", "prompt_cam")),
        {"method": "intr", "alpha": None, "metrics": maps, "subsets": both},
        {"method": "promptcam", "alpha": None, "metrics": maps[:2] + maps[4:], "subsets": both},
        {"method": "sst", "alpha": None, "metrics": ["miou"], "subsets": ["cryptic", "queries"]},
        {"method": "uniform", "alpha": None, "metrics": ["trait_energy"], "subsets": ["all", "cryptic"]}]
    # Prompt-CAM's heads are ranked where the model predicts the true class, and only those images are summarised
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select count(distinct image_id) as images, count(distinct species) as species from "
                     "prompt_heads where ranked", cwd=tmp_path)
    ranked = json.loads(done.stdout)[0]
    assert 0 < ranked["images"] < 20
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select method, count(*) as n, count(distinct image_id) as images from cam_parts group by 1 "
                     "order by 1", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"method": "clip-concept-gradcam", "n": 20 * 2 * 7, "images": 20},
                                       {"method": "gradcam", "n": 20 * 2 * 7, "images": 20},  # alphas x parts
                                       {"method": "intr", "n": 20 * 2 * 7, "images": 20},  # heads x parts
                                       {"method": "promptcam", "n": ranked["images"] * 2 * 7,
                                        "images": ranked["images"]}]
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select method, count(*) as n, bool_and(consistency between 0 and 1) as share, "
                     "sum(n) as images from species_traits group by 1 order by 1", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"method": "clip-concept-gradcam", "n": 8, "share": True, "images": 40},
                                       {"method": "gradcam", "n": 8, "share": True, "images": 40},
                                       *({"method": f"interventions-{model}", "n": 4, "share": True, "images": 20}
                                         for model in ("classifier", "clip-concept", "intr", "prompt_cam")),
                                       {"method": "intr", "n": 8, "share": True, "images": 40},
                                       {"method": "promptcam", "n": 2 * ranked["species"], "share": True,
                                        "images": 2 * ranked["images"]}]
    done = traitpipe("query", "--results", results, "--format", "json",  # every part of every image, per model
                     "select model, count(*) as n, count(distinct image_id) as images, "
                     "bool_and((delta_logit is null) = (area_share = 0)) as absent, "
                     "bool_and(fill = 'mean') as fill from part_effects group by 1 order by 1", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"model": model, "n": 20 * 7, "images": 20, "absent": True, "fill": True}
                                       for model in ("classifier", "clip-concept", "intr", "prompt_cam")]
    means = open_maps(tmp_path / "results" / "maps" / "species" / "cam-gradcam.zarr")
    assert means["mean"].shape == (4, 2, 64, 64) and means["species_id"].shape == (4,)
    total = means["mean"][:].sum(axis=(2, 3))  # a mean of distributions, where some map had mass
    assert np.allclose(total[means["images"][:] > 0], 1.0, atol=1e-3) and (total[means["images"][:] == 0] == 0).all()
    report = tmp_path / "results" / "report.html"
    html = report.read_text()
    assert "sam2 ran with random weights" in html and html.count("<img ") == 4 + 2  # species, chart, tree
    assert "http://" not in html and "https://" not in html  # self-contained
    assert sorted(p.name for p in (tmp_path / "results" / "figures" / "species").iterdir()) == [
        "arar_hirta.png", "berami_elegans.png", "phano_insignis.png", "phano_vittata.png"]
    from traitpipe.report.browser import find_chromium

    if find_chromium() is not None and shutil.which("chromedriver"):  # a real browser reads it
        done = traitpipe("check-report", str(report), "--screenshot", str(tmp_path / "report.png"), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "6 images, 0 broken, 0 console errors" in done.stdout
    phylonn = json.loads((tmp_path / "results" / "models" / "phylonn.json").read_text())
    cards = {path.stem: ModelCard.read(path) for path in (tmp_path / "results" / "models").glob("*.json")}
    assert set(cards) == {"classifier", "prompt_cam", "intr", "clip", "phylonn"}  # one layout for every model
    for name, card in cards.items():  # each card names its weights
        assert card.sha256 == sha256_file(tmp_path / "results" / "models" / f"{name}.pt"), name
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select distinct subset, n from evaluation where stage = 'phylonn'", cwd=tmp_path)
    # evaluated on the held-out specimens only (one of five per species here): 4 species, 6 pairs
    assert len(phylonn["extra"]["held_out"]) == 4 and json.loads(done.stdout) == [{"subset": "held_out", "n": 6}]
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select count(distinct image_id) as images, count(*) as n, max(rank) as last, "
                     "count(distinct head) as heads from prompt_heads", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"images": 20, "n": 40, "last": 1, "heads": 2}]  # 2 heads ranked per image
    prompt_maps = open_maps(tmp_path / "results" / "maps" / "cam-promptcam" / "shard-00000.zarr")
    assert prompt_maps["cam"].shape[1:] == (2, 2, 2)  # heads, patch grid
    intr_maps = open_maps(tmp_path / "results" / "maps" / "cam-intr" / "shard-00000.zarr")
    assert intr_maps["cam"].shape[1:] == (2, 2, 2) and intr_maps.attrs["heads"] == [0, 1]  # heads, 64 px / 32
    intr_means = open_maps(tmp_path / "results" / "maps" / "species" / "cam-intr.zarr")
    assert intr_means["mean"].shape == (4, 2, 64, 64) and intr_means.attrs["head"] == [0, 1]
    # a second run with the same config has nothing to do
    done = traitpipe("run", "--config", str(config), "--", "-n", cwd=tmp_path)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr
    # Snakemake's own report of the run carries traitpipe's
    done = traitpipe("run", "--config", str(config), "--", "--report", str(tmp_path / "snakemake.html"), cwd=tmp_path)
    assert done.returncode == 0 and "Adding report.html" in done.stderr, done.stderr[-3000:]
    page = tmp_path / "snakemake.html"  # one file, traitpipe's report inside it under its category
    assert page.stat().st_size > (tmp_path / "results" / "report.html").stat().st_size
    assert "traitpipe" in page.read_text()


def test_bad_config_stops_before_any_work(small_collection, tmp_path):
    config = write_config(tmp_path, small_collection, shard_size=0)
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "config key shard_size: 0 is not allowed" in done.stderr
    config = write_config(tmp_path, small_collection,
                          collection={"root": str(small_collection), "manifest": "manifest.csv",
                                      "columns": {"species": "taxon"}})
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode != 0 and "no column 'taxon' (config key collection.columns.species)" in done.stderr
    assert not (tmp_path / "results").exists()


def test_no_config_string_reaches_a_shell_unquoted(small_collection, tmp_path):
    """A results folder with a space and shell syntax in its name: every job runs, nothing is executed."""
    results = tmp_path / "res dir $(touch INJECTED) `touch INJECTED2`; touch INJECTED3"
    config = write_config(tmp_path, small_collection, results=str(results), segment={"enabled": False},
                          phylo={"enabled": False}, explain={"enabled": False}, prompt_cam={"enabled": False})
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.rglob("INJECTED*")) and not list(results.parent.glob("INJECTED*"))
    done = traitpipe("query", "--results", str(results), "--format", "json",
                     "select count(*) as n from images", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"n": 20}]
    assert (results / "logs" / "ingest").is_dir() and any((results / "logs" / "ingest").iterdir())


def test_a_shard_whose_images_all_fail_is_a_shard_with_no_rows(collection_copy, tmp_path):
    import pandas as pd

    config = write_config(tmp_path, collection_copy, segment={"enabled": False}, explain={"enabled": False},
                          prompt_cam={"enabled": False})
    assert traitpipe("run", "--config", str(config), "--", "--until", "ingest", cwd=tmp_path).returncode == 0
    images = pd.read_parquet(tmp_path / "results" / "tables" / "images")
    lost = sorted(images["shard"].unique())[-1]
    for path in images.loc[images["shard"] == lost, "path"]:
        (collection_copy / path).write_bytes(b"not an image any more")
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = pd.read_parquet(tmp_path / "results" / "tables" / "codes")
    assert len(codes) == (images["shard"] != lost).sum() and set(codes["image_id"]) == set(
        images.loc[images["shard"] != lost, "image_id"])
    assert (tmp_path / "results" / "tables" / "species_distances").exists()
    failures = pd.read_parquet(tmp_path / "results" / "tables" / "failures")
    assert sorted(failures["path"]) == sorted(images.loc[images["shard"] == lost, "path"])


def test_explain_goes_on_past_a_bad_image_and_reruns_one_method_alone(collection_copy, tmp_path):
    config = write_config(tmp_path, collection_copy, segment={"enabled": False}, phylo={"enabled": False},
                          prompt_cam={"enabled": False}, shard_size=10,
                          explain={"batch_size": 8, "methods": [{"name": "gradcam", "alphas": [None, 1.0]},
                                                                {"name": "hirescam"}]})
    assert traitpipe("run", "--config", str(config), "--", "--until", "classifier", cwd=tmp_path).returncode == 0
    victim = sorted((collection_copy / "images").rglob("*.png"))[3]
    original, mtime = victim.read_bytes(), victim.stat().st_mtime
    victim.write_bytes(b"broken after ingest")
    os.utime(victim, (mtime, mtime))
    # a file that breaks while the run goes on (here: its old mtime hides the change from Snakemake, which
    # would otherwise rerun ingest on it) fails its image in each explain job, not the job
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select stage, path, reason from failures order by stage", cwd=tmp_path)
    assert [(r["stage"], r["path"]) for r in json.loads(done.stdout)] == [
        ("cam-gradcam", str(victim.relative_to(collection_copy))),
        ("cam-hirescam", str(victim.relative_to(collection_copy)))]
    victim.write_bytes(original)  # the same bytes again: nothing to redo
    assert _dry_run_jobs(config, tmp_path) == []
    settings = yaml.safe_load(config.read_text())
    settings["explain"]["methods"][0]["alphas"] = [None, 0.5]
    config.write_text(yaml.safe_dump(settings))
    jobs = _dry_run_jobs(config, tmp_path)
    shards = sorted({s for _, s, _ in jobs if s})
    assert len(shards) == 2 and jobs == sorted(  # hirescam's maps stay
        [("all", None, None), ("evaluate", None, None), ("report", None, None)]
        + [("explain", s, "gradcam") for s in shards], key=str)
    settings["explain"]["methods"] = [{"name": "layercam", "layers": ["blocks.0.norm"]}]
    config.write_text(yaml.safe_dump(settings))
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "no module 'blocks.0.norm'; nearest names: blocks.0.norm2, blocks.0.norm1" in done.stdout + done.stderr
    assert not progress_lines(done.stderr)  # the config is checked before any job: the classifier stays


def test_a_species_without_reference_mask_fails_alone(collection_copy, tmp_path):
    import pandas as pd

    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    lost = manifest["species"].iloc[0]
    manifest.loc[manifest["species"] == lost, "mask"] = ""
    manifest.to_csv(collection_copy / "manifest.csv", index=False)
    config = write_config(tmp_path, collection_copy, explain={"enabled": False}, phylo={"enabled": False},
                          segment={**SMALL_SAM2, "finetune": {"enabled": True, "steps": 2, "queries_per_species": 2},
                                   "retrieval": {"part": "left_forewing"}})
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select species, stage, reason from failures", cwd=tmp_path)
    rows = json.loads(done.stdout)
    assert len(rows) == 5 and {r["species"] for r in rows} == {lost} and {r["stage"] for r in rows} == {"segment"}
    assert rows[0]["reason"] == f"no reference mask for species {lost!r} (looked in manifest column 'mask')"
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select count(distinct image_id) as n from parts", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"n": 15}]
    tuned = json.loads((tmp_path / "results" / "models" / "sam2_finetuned.json").read_text())
    assert tuned["sha256"] and tuned["source"]["trained"] == "fine-tuned (segment.finetune)"
    tuned = tuned["extra"]
    assert len(tuned["losses"]) == 2 and tuned["species"] == 3
    # the guard: each species' next 2 queries set aside, measured before tuning and after its last step
    assert tuned["check_pairs"] == 3 * 2 and [c["step"] for c in tuned["checks"]] == [0, 2]
    assert tuned["kept_step"] == min(tuned["checks"], key=lambda c: c["loss"])["step"]
    assert tuned["skipped"] == [f"no reference mask for species {lost!r} (looked in manifest column 'mask')"]
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select count(*) as n, count(round_trip_iou) as scored, any_value(part) as part from retrieval",
                     cwd=tmp_path)
    assert json.loads(done.stdout) == [{"n": 12, "scored": 12, "part": "left_forewing"}]


def _dry_run_jobs(config, cwd, *snakemake_args):
    """(rule, shard, method) of every job a dry run would run (None where a rule has no such wildcard; the
    method is also the map product of the trait rules)."""
    done = traitpipe("run", "--config", str(config), "--", "-n", *snakemake_args, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = []
    for line in (done.stdout + done.stderr).splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            jobs.append((line.split(" ", 1)[1][:-1], None, None))
        elif line.startswith("wildcards:") and jobs:
            wildcards = dict(item.split("=", 1) for item in line.split(":", 1)[1].strip().split(", "))
            jobs[-1] = (jobs[-1][0], wildcards.get("shard"), wildcards.get("method", wildcards.get("mapped")))
    return sorted(jobs, key=str)


def test_editing_a_reference_mask_or_the_tree_reruns_exactly_what_read_it(collection_copy, tmp_path):
    import pandas as pd
    from PIL import Image

    # two shards (of two species each): an edit reruns its own shard's jobs, or every shard's
    config = write_config(tmp_path, collection_copy, explain={"enabled": False}, prompt_cam={"enabled": False},
                          shard_size=10)
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _dry_run_jobs(config, tmp_path) == []
    images = pd.read_parquet(tmp_path / "results" / "tables" / "images")
    assert images["shard"].nunique() == 2
    manifest = pd.read_csv(collection_copy / "manifest.csv", keep_default_na=False)
    species = sorted(manifest["species"].unique())[2]
    shard = images.loc[images["species"] == species, "shard"].unique().tolist()
    mask_file = collection_copy / manifest.loc[(manifest["species"] == species) & (manifest["mask"] != ""), "mask"].iloc[0]
    mask = np.array(Image.open(mask_file))
    Image.open(mask_file).save(mask_file)  # same pixels, new mtime: nothing to redo
    assert _dry_run_jobs(config, tmp_path) == []
    mask[mask == 2] = 3  # a labelled part redrawn: the thorax becomes abdomen
    Image.fromarray(mask).save(mask_file)
    after = [("all", None, None), ("evaluate", None, None), ("report", None, None)]  # scores and report follow
    assert _dry_run_jobs(config, tmp_path) == sorted(
        after + [("segment", s, None) for s in shard] + [("part_truth", s, None) for s in shard], key=str)
    assert traitpipe("run", "--config", str(config), cwd=tmp_path).returncode == 0
    truth_file = collection_copy / manifest.loc[manifest["species"] == species, "parts_truth"].iloc[1]
    truth = np.array(Image.open(truth_file))
    Image.fromarray(np.where(truth == 1, 2, truth).astype(np.uint8)).save(truth_file)  # a truth mask corrected
    assert _dry_run_jobs(config, tmp_path) == sorted(after + [("part_truth", s, None) for s in shard], key=str)
    assert traitpipe("run", "--config", str(config), cwd=tmp_path).returncode == 0
    tree = collection_copy / "phylogeny.nwk"
    tree.write_text(re.sub(r":([0-9.eE-]+)", lambda m: f":{2 * float(m.group(1))!r}", tree.read_text()))  # twice as deep
    shards = sorted(images["shard"].unique())
    phylo = [("all", None, None), ("phylo_train", None, None), ("phylo_eval", None, None), ("report", None, None)] + [
        ("codes", s, None) for s in shards]
    assert _dry_run_jobs(config, tmp_path) == sorted(phylo, key=str)
    assert traitpipe("run", "--config", str(config), cwd=tmp_path).returncode == 0
    victim = collection_copy / images.loc[images["species"] == species, "path"].iloc[-1]
    Image.fromarray(np.array(Image.open(victim))[::-1].copy()).save(victim)  # the same specimen, upside down
    # its shard's ingest and segment read the file; Phylo-NN trains on every image, so it and all codes follow
    assert _dry_run_jobs(config, tmp_path) == sorted(
        phylo + [("evaluate", None, None)] + [(rule, s, None) for rule in ("ingest", "segment", "part_truth")
                                              for s in shard], key=str)


def test_a_sam2_trained_here_segments_and_is_scored_on_held_out_species(tmp_path):
    # the small collection, with each species' last two specimens missing their left forewing or half of it
    collection = synthesize(tmp_path / "collection", n_species=4, per_species=5, size=64, seed=3, damaged=2)
    config = write_config(tmp_path, collection, explain={"enabled": False}, phylo={"enabled": False},
                          segment={"config": "sam2_small", "checkpoint": "train", "image_size": 64, "canvas": 64,
                                   "train": {"epochs": 1, "frames": 3, "val_species": 1, "pretrain_steps": 2},
                                   "finetune": {"enabled": True, "steps": 2, "queries_per_species": 2,
                                                "check_queries_per_species": 1},
                                   "retrieval": {"part": "part_4"}})
    # (parts undeclared)
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((tmp_path / "results" / "models" / "sam2_trained.json").read_text())
    assert len(trained["extra"]["held_out"]) == 1 and len(trained["history"]) == 1 and trained["sha256"]
    assert "not released SAM 2 weights" in trained["source"]["trained"]
    labels = open_maps(tmp_path / "results" / "maps" / "segment" / "shard-00000.zarr")
    sam2 = labels.attrs["provenance"]["models"]["sam2"]
    tuned = json.loads((tmp_path / "results" / "models" / "sam2_finetuned.json").read_text())
    assert tuned["source"]["kind"] == "trained here" and tuned["sha256"] != trained["sha256"]
    assert sam2["random_weights"] is False and sam2["trained_here"] is True and sam2["sha256"] == tuned["sha256"]
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select subset, n from evaluation where method = 'sst' and metric = 'miou' order by 1",
                     cwd=tmp_path)
    # the held-out species' 4 query images (its reference is the prompt), the trained ones' 12 apart
    assert {r["subset"]: r["n"] for r in json.loads(done.stdout)} == {"cryptic": 8, "held_out": 4, "queries": 16,
                                                                      "trained": 12}
    assert labels.attrs["parts"] == {str(k): f"part_{k}" for k in range(1, 8)}  # named from the reference masks
    assert trained["extra"]["pretrain_losses"] and len(trained["extra"]["pretrain_losses"]) == 2
    assert trained["extra"]["warning"].startswith("held-out mIoU 0.0")  # 1 epoch: flagged as not worth reading
    # fine-tuning scored SST before and after on the same query images, none of which it tuned on or guarded
    # with: each species' 4 queries are 2 tuned, 1 guard, 1 scored
    roles = {k: set(tuned["extra"][k]) for k in ("tuned_images", "check_images", "scored_images")}
    assert [len(v) for v in roles.values()] == [8, 4, 4]
    assert not roles["scored_images"] & (roles["tuned_images"] | roles["check_images"])
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select metric, subset, n, value from evaluation where stage = 'sst_finetune' and part is null "
                     "order by 1, 2", cwd=tmp_path)
    rows = json.loads(done.stdout)
    assert [(r["metric"], r["subset"], r["n"]) for r in rows] == [
        (m, s, n) for m in ("miou_tuned", "miou_untuned")
        for s, n in (("held_out", 1), ("queries", 4), ("trained", 3))]
    assert all(0 <= r["value"] <= 1 for r in rows)
    # the score after tuning is the segment step's (made with the tuned model, on the same pseudo-video) on
    # those same images
    scored = ", ".join(f"'{i}'" for i in sorted(roles["scored_images"]))
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select avg(iou) as value from (select part, sum(intersection_pixels) / "
                     "nullif(sum(union_pixels), 0) as iou from part_truth where frame_index > 0 and image_id in "
                     f"({scored}) group by part)", cwd=tmp_path)
    assert json.loads(done.stdout)[0]["value"] == pytest.approx(
        next(r["value"] for r in rows if (r["metric"], r["subset"]) == ("miou_tuned", "queries")), abs=1e-9)
    # the retrieval score against the part's true condition, read from the truth masks
    done = traitpipe("query", "--results", str(tmp_path / "results"), "--format", "json",
                     "select metric, n, part from evaluation where subset = 'queries' and metric like '%round_trip%'"
                     " or metric = 'retrieval_auc' and subset = 'queries' order by 1", cwd=tmp_path)
    assert json.loads(done.stdout) == [{"metric": "retrieval_auc", "n": 16, "part": "part_4"}] + [
        {"metric": f"round_trip_iou_{c}", "n": n, "part": "part_4"} for c, n in (("absent", 4), ("damaged", 4),
                                                                                  ("intact", 8))]


def test_a_killed_run_resumes_to_what_an_uninterrupted_run_gives(small_collection, tmp_path):
    """The whole workflow on a Darwin Core archive, three times in one folder: run to the end; run again from
    nothing and SIGKILL it (Snakemake and its jobs) once every image is ingested; unlock and run again. The
    killed run leaves nothing that looks finished under a final name, the rerun redoes none of the finished
    jobs, and the end is the first run's tables and maps exactly (run_id aside): a run is reproducible."""
    import signal
    import time

    import pyarrow.parquet as pq

    from conftest import result_differences

    # the collection as a Darwin Core archive (images inside it), reference masks in a folder named by image
    root = tmp_path / "c"
    shutil.copytree(small_collection, root)
    manifest = write_dwca(root, root / "dwca.zip")
    (root / "refs").mkdir()
    for _, group in manifest.groupby("species"):
        labelled = group[group["mask"] != ""].iloc[0]
        shutil.copy(root / labelled["mask"], root / "refs" / f"{labelled.specimen_id}.png")
    # one shard, and without Prompt-CAM and Phylo-NN (run elsewhere): the test runs the workflow two and a half times
    config = write_config(tmp_path, root, evaluate={}, shard_size=20, prompt_cam={"enabled": False},
                          phylo={"enabled": False})
    raw = yaml.safe_load(config.read_text())
    raw["collection"].update(manifest="dwca.zip", columns={"path": "path", "species": "species",
                                                           "specimen": "catalogNumber", "ranks": ["family", "genus"]})
    raw["segment"]["masks"] = "refs"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = results.rename(tmp_path / "uninterrupted")

    # the same cores as the other runs: a job's threads change its floating-point sums' order, and so its last bits
    run = subprocess.Popen([sys.executable, "-m", "traitpipe", "run", "--config", str(config), "--", *ONE_THREAD],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300  # the classifier reads every shard's images table: ingest is over
    while not (results / "models" / "classifier.pt").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and every job it started, mid-run
    run.wait()
    for table in results.rglob("part-*.parquet"):  # what has a final name is whole
        pq.read_metadata(table)
    for store in results.rglob("zarr.json"):
        json.loads(store.read_text())
    ingested = {p: p.stat().st_mtime_ns for p in (results / "tables" / "images").glob("part-*.parquet")}
    assert len(ingested) == 1

    again = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert again.returncode != 0 and "-- --unlock" in again.stderr  # the killed run's lock, and what to do
    assert traitpipe("run", "--config", str(config), "--", "--unlock", cwd=tmp_path).returncode == 0
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in ingested} == ingested  # finished jobs are not redone
    assert not [p for p in results.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]
    rows = json.loads(traitpipe("query", "--results", str(results), "--format", "json",
                                "select count(*) as n, bool_and(starts_with(path, 'dwca.zip!/media/')) as inside, "
                                "(select count(distinct image_id) from parts) as segmented from images",
                                cwd=tmp_path).stdout)
    assert rows == [{"n": 20, "inside": True, "segmented": 20}]  # every image read from inside the archive
    assert (results / "report.html").is_file()
    assert result_differences(uninterrupted, results) == []