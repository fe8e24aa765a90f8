"""Checks made when the workflow is parsed, before any job: each would otherwise stop a run after minutes."""

import subprocess
import sys

import pandas as pd
import torch
import yaml

from traitpipe.config import validate_config
from traitpipe.preflight import check_checkpoints, check_layers, check_phylogeny

from conftest import write_config

SPECIES = ["Mily alba", "Mily picta"]


def config_with(tmp_path, **sections):
    raw = {"collection": {"root": str(tmp_path), "manifest": "m.csv"}, **sections}
    return validate_config(raw)


def test_the_tree_must_exist_parse_and_hold_every_species(tmp_path):
    config = config_with(tmp_path, collection={"root": str(tmp_path), "manifest": "m.csv", "phylogeny": "t.nwk"})
    assert check_phylogeny(config, SPECIES) == [f"collection.phylogeny: file not found: {tmp_path / 't.nwk'}"]
    (tmp_path / "t.nwk").write_text("this is not (a tree")
    [problem] = check_phylogeny(config, SPECIES)
    assert problem.startswith(f"collection.phylogeny: {tmp_path / 't.nwk'} is not a Newick tree: ")
    (tmp_path / "t.nwk").write_text("('Mily alba':1,'Other sp':1);")
    [problem] = check_phylogeny(config, SPECIES)
    assert "1 species of the manifest have no tip" in problem and problem.endswith(
        "Mily picta (tip names must equal the species column, underscores and spaces as written)")
    (tmp_path / "t.nwk").write_text("('Mily alba':1,'Mily picta':1);")
    assert check_phylogeny(config, SPECIES) == []


def test_checkpoint_files_must_exist_and_look_like_torch_checkpoints(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "good.pt")
    (tmp_path / "notes.pt").write_text("weights are on the shared drive")
    config = config_with(tmp_path, classifier={"checkpoint": str(tmp_path / "missing.pt")},
                         prompt_cam={"checkpoint": str(tmp_path / "notes.pt")},
                         phylo={"checkpoint": str(tmp_path / "good.pt")},
                         segment={"checkpoint": "facebook/sam2.1-hiera-tiny"})  # a named source: not a file
    problems = check_checkpoints(config)
    assert len(problems) == 2
    assert problems[0].startswith(f"classifier.checkpoint: no such file {tmp_path / 'missing.pt'}")
    assert problems[1] == (f"prompt_cam.checkpoint: {tmp_path / 'notes.pt'} is not a torch checkpoint (it starts "
                           "with neither a zip nor a pickle header): empty, truncated at the start, or another kind "
                           "of file")
    config = config_with(tmp_path, segment={"checkpoint": "sam2_tiny.pt"}, classifier={"checkpoint": "timm"})
    [problem] = check_checkpoints(config)
    assert problem.startswith("segment.checkpoint: no such file sam2_tiny.pt (a checkpoint is a local file, a "
                              "released SAM 2 name")


def test_layer_names_are_checked_against_the_architecture_without_building_weights(tmp_path):
    tiny = {"arch": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2}}
    good = config_with(tmp_path, classifier=tiny,
                       explain={"methods": [{"name": "gradcam", "layers": ["blocks.1.norm1", "blocks.0.norm1"]}]})
    assert check_layers(good, 3) == []
    bad = config_with(tmp_path, classifier=tiny,
                      explain={"methods": [{"name": "gradcam"}, {"name": "layercam", "layers": ["blocks.2.norm1"]}]})
    [problem] = check_layers(bad, 3)
    assert problem.startswith("explain.methods (layercam).layers: vit_tiny_patch16_224: the model has no module "
                              "'blocks.2.norm1'; nearest names: blocks.1.norm1")


def test_a_run_with_a_species_missing_from_the_tree_stops_before_any_job(small_collection, tmp_path):
    tree = tmp_path / "tree.nwk"
    species = sorted(pd.read_csv(small_collection / "manifest.csv")["species"].unique())
    tree.write_text("(" + ",".join(f"'{name}':1" for name in species[1:]) + ");")
    config = write_config(tmp_path, small_collection)
    raw = yaml.safe_load(config.read_text())
    raw["collection"]["phylogeny"] = str(tree)  # absolute: taken as is under the root join
    config.write_text(yaml.safe_dump(raw))
    for command in (["run", "--config", str(config)], ["validate", str(config)]):
        done = subprocess.run([sys.executable, "-m", "traitpipe", *command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"have no tip in {tree}: {species[0]}" in done.stderr
    assert not (tmp_path / "results").exists()  # nothing ran


def test_checking_local_checkpoint_files_imports_no_model_library(tmp_path):
    """Snakemake parses the workflow, and so runs preflight, at each start: every dry run, and on a cluster in
    every job. Checking checkpoint files reads their first bytes; importing timm for it cost 4.5 s a start."""
    for name in ("classifier", "prompt_cam", "phylo", "sam2"):
        torch.save({"w": torch.zeros(1)}, tmp_path / f"{name}.pt")
    sections = {name: {"checkpoint": str(tmp_path / f"{name}.pt")} for name in ("classifier", "prompt_cam", "phylo")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "collection": {"root": str(tmp_path), "manifest": "m.csv"}, "phylo": {"enabled": False},
        "segment": {"checkpoint": str(tmp_path / "sam2.pt")}, **sections}))
    check = ("import sys, yaml, pandas\n"
             "from traitpipe.config import validate_config\n"
             "from traitpipe.preflight import preflight\n"
             f"config = validate_config(yaml.safe_load(open({str(tmp_path / 'config.yaml')!r})))\n"
             "print(preflight(config, pandas.DataFrame({'species': ['Mily alba']})),"
             " sorted({'torch', 'timm', 'sam2', 'open_clip'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[]"]

