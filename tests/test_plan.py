"""The plan of a run (traitpipe/plan.py): what the workflow builds, as data the workflow and these tests read."""

import re
import subprocess
import sys

import yaml

from traitpipe.cli import DEMO_COLLECTION, DEMO_CONFIG, DEMO_PARAMS
from traitpipe.collection import synthesize
from traitpipe.config import validate_config
from traitpipe.plan import Plan

SHARDS = {"00000": ["B b", "A a"], "00001": ["C c"]}


def _demo_config(**changes):
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    for section, values in changes.items():
        config[section] = {**config.get(section, {}), **values}
    return validate_config(config)


def _stages(files, table):
    """{stage: shards} of ``tables/<table>/stage=<stage>/part-<shard>.parquet`` paths."""
    found = {}
    for file in files:
        stage, shard = re.search(rf"tables/{table}/stage=([^/]+)/part-([^/]+)\.parquet", file).groups()
        found.setdefault(stage, set()).add(shard)
    return found


def test_the_demo_plan_names_every_product_and_its_files():
    plan = Plan.make(_demo_config(), SHARDS)
    assert plan.species_of_shard["00000"] == ["A a", "B b"]
    assert plan.mapped == ["gradcam", "layercam", "promptcam", "intr", "clip-species-gradcam",
                           "clip-concept-gradcam"]
    assert plan.cams == ["gradcam", "layercam", "intr", "clip-species-gradcam", "clip-concept-gradcam"]
    assert list(_stages(plan.evaluation_files(), "evaluation")) == [
        "classifier", "prompt_cam", "intr", "clip", "phylo_train", "phylonn", "sst_finetune", "evaluate"]
    per_shard = {stage for stage, shards in _stages(plan.failure_files(), "failures").items()
                 if shards == set(SHARDS)}
    # one interventions job per model the maps explain, not per map product
    assert plan.effect_models == ["classifier", "prompt_cam", "intr", "clip-species", "clip-concept"]
    assert plan.intervened["layercam"] == "classifier" and plan.intervened["clip-concept-gradcam"] == "clip-concept"
    assert per_shard == {"ingest", "segment", "codes", "part_truth"} | {f"cam-{m}" for m in plan.mapped} | {
        f"cam_parts-{m}" for m in plan.mapped} | {f"part_effects-{m}" for m in plan.effect_models}
    targets = plan.targets()
    assert "results/report.html" in targets and len(targets) == len(set(targets))
    assert {f"results/tables/species_traits/method={m}/part-all.parquet" for m in plan.mapped} <= set(targets)
    assert {f"results/tables/species_traits/method=interventions-{m}/part-all.parquet"
            for m in plan.effect_models} <= set(targets)
    kind, wildcards = plan.intervention("clip-concept")
    assert kind.models == ("clip",) and wildcards["prompts"] == "concept"


def test_steps_that_are_off_make_no_files():
    plan = Plan.make(_demo_config(segment={"enabled": False}, clip={"enabled": False}, phylo={"enabled": False}),
                     SHARDS)
    assert plan.map_products == [f"cam-{m}" for m in ("gradcam", "layercam", "promptcam", "intr")]
    assert not plan.segment_outputs() and not plan.phylo_outputs()
    assert not any("species_traits" in f or "part_truth" in f or "clip" in f for f in plan.targets()
                   + plan.failure_files() + plan.evaluation_files())
    quiet = Plan.make(_demo_config(explain={"enabled": False}, segment={"enabled": False}), SHARDS)
    assert quiet.mapped == [] and quiet.evaluation_files() == [
        f"results/tables/evaluation/stage={s}/part-{s}.parquet" for s in ("phylo_train", "phylonn")]


def test_every_evaluation_and_failures_file_a_rule_writes_is_in_the_plan(tmp_path):
    """The workflow's own dry run with every product of the demo: the evaluation and failures files its rules
    write are exactly the plan's (a step whose tables the plan forgot would leave them out of the evaluation and
    the report without an error), and every target is some rule's output."""
    synthesize(tmp_path / DEMO_COLLECTION, **DEMO_PARAMS)
    done = subprocess.run([sys.executable, "-m", "traitpipe", "run", "--config", str(DEMO_CONFIG), "--", "-n",
                           "--forceall"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = {file for line in (done.stdout + done.stderr).splitlines() if line.strip().startswith("output:")
               for file in line.split("output:", 1)[1].strip().split(", ")}
    plan = Plan.make(_demo_config(), {"00000": [], "00001": []})
    assert {f for f in outputs if "/tables/evaluation/" in f} == set(plan.evaluation_files())
    assert {f for f in outputs if "/tables/failures/" in f} == set(plan.failure_files())
    assert set(plan.targets()) <= outputs


def test_every_product_on_plans_every_file_of_every_product():
    """Every CAM method on the classifier and on the CLIP, Prompt-CAM and INTR: each product has its map store,
    its table, its failures and its species summary in every shard, and each model its training files."""
    from traitpipe.explain.cam import METHODS
    from traitpipe.products import MAP_KINDS

    methods = [{"name": name} for name in METHODS]
    plan = Plan.make(_demo_config(explain={"methods": methods}, clip={"methods": methods},
                                  occlusion={"enabled": True}), SHARDS)
    assert len(plan.mapped) == 2 * len(METHODS) + 3 + len(METHODS) == len(set(plan.mapped))
    assert "occlusion" in plan.cams
    assert plan.models == ["classifier", "prompt_cam", "intr", "clip"]
    targets, failures = set(plan.targets()), set(plan.failure_files())
    for product in plan.products:
        kind = MAP_KINDS[product.kind]
        for shard in SHARDS:
            assert plan.table(kind.table, shard, kind.table_partition(product.name)) in targets, product
            assert {plan.table("failures", shard, f"{stage}-{product.name}") for stage in ("cam", "cam_parts")} <= (
                failures), product
        assert plan.table("species_traits", "all", product.name) in targets
    assert {plan.table("failures", "all", job) for job in ("classifier", "prompt_cam_train", "intr_train",
                                                            "clip_model")} <= failures
    assert plan.wildcard_values() == {"method": list(METHODS), "prompts": ["species", "concept"],
                                      "clip_method": list(METHODS)}


def test_a_registered_map_kind_and_model_enter_the_plan(monkeypatch):
    """A new map-producing method is an entry in each registry: the plan then names its model's training files,
    its map products' tables and failures, without another change."""
    from traitpipe import products
    from traitpipe.products import MAP_KINDS, MODELS, MapKind, Model

    monkeypatch.setitem(MODELS, "probe", Model("probe", job="probe_train", section="intr"))
    monkeypatch.setitem(MAP_KINDS, "probe", MapKind(
        "probe", job="probe", product="probe", models=("probe",), table="cams", table_option="cams", panel="heads",
        products=lambda config: [("probe", {})], settings=lambda config, **_: {}, intervened="probe"))
    plan = Plan.make(_demo_config(), SHARDS)
    assert plan.mapped[-1] == "probe" and plan.models[-1] == "probe" and plan.kind("probe") is MAP_KINDS["probe"]
    assert plan.table("evaluation", "probe", "probe") in plan.evaluation_files()
    assert plan.table("failures", "all", "probe_train") in plan.failure_files()
    assert {plan.table("cams", s, "probe") for s in SHARDS} <= set(plan.targets())
    assert plan.effect_models[-1] == "probe" and plan.table("failures", "00000", "part_effects-probe") in \
        plan.failure_files()
    assert products.map_products(_demo_config())["probe"] == "probe"


def test_the_slurm_profile_puts_every_models_and_map_products_rule_in_the_gpu_partition():
    """Each train and map rule the registries make runs on a GPU: the slurm profile's default partition is the
    GPU one and only CPU rules name another, so a new product's rules need no line in the profile; one that
    landed in the CPU partition would ask it for a GPU."""
    from traitpipe.cli import SNAKEFILE
    from traitpipe.products import MAP_KINDS, MODELS

    profile = yaml.safe_load((SNAKEFILE.parent / "profiles" / "slurm" / "config.yaml").read_text())
    default = profile["default-resources"]["slurm_partition"]
    rules = [model.job for model in MODELS.values()] + [kind.rule for kind in MAP_KINDS.values()]
    assert default == "gpu" and [r for r in rules if profile["set-resources"].get(r, {}).get(
        "slurm_partition", default) != "gpu"] == []


def test_shard_size_auto_keeps_a_million_images_under_the_job_budget_and_grows_with_the_jobs_per_shard():
    """shard_size: auto (the default): the demo's products at 10^6 images over 10^4 species make at most 4,000
    per-shard jobs (bench/dag.py plans them, with the run's own, under 5,000 jobs); fewer products, smaller
    shards; a small collection one shard of 512; a number given is kept."""
    import pandas as pd

    from traitpipe.collection.shards import AUTO_JOBS, plan_shards
    from traitpipe.plan import shard_size

    species = pd.Series([f"s{k % 10_000:05d}" for k in range(1_000_000)])
    counts = species.value_counts().to_dict()
    demo = {key: value for key, value in _demo_config().items() if key != "shard_size"}
    full = validate_config(demo)
    lean = validate_config({**demo, "explain": {"enabled": False}, "phylo": {"enabled": False},
                            "interventions": {"enabled": False}})
    jobs = {name: len(Plan.make(config, {"00000": []}).per_shard_stages()) for name, config in
            (("full", full), ("lean", lean))}
    sizes = {name: shard_size(config, species) for name, config in (("full", full), ("lean", lean))}
    assert jobs["full"] > jobs["lean"] and sizes["full"] > sizes["lean"]
    for name in sizes:
        assert len(plan_shards(counts, sizes[name])) * jobs[name] <= AUTO_JOBS[1] < len(
            plan_shards(counts, sizes[name] - 512)) * jobs[name]  # the smallest multiple of 512 that fits
    assert shard_size(full, species[:3000]) == 512 and shard_size({**full, "shard_size": 64}, species) == 64
