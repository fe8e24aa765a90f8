"""The conda environment files (envs/): what they install is what pyproject.toml asks for, from conda-forge, and
nothing in them depends on where the file lies (Snakemake and conda create environments from copies)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
#: pyproject's name of each package an environment file installs from conda-forge -> conda-forge's names.
CONDA_NAMES = {"torch": ("pytorch-cpu", "pytorch-gpu"), "torchvision": ("torchvision",)}


def lower_bound(spec: str) -> str | None:
    """``2.5`` of ``torch>=2.5`` or ``pytorch-gpu >=2.5``."""
    found = re.search(r">=\s*([0-9][0-9.]*)", spec)
    return found[1] if found else None


def test_each_environment_file_asks_for_what_pyproject_asks_with_its_build():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~ ]", spec)[0]: lower_bound(spec) for spec in project["dependencies"]}
    builds = {"cpu.yaml": "pytorch-cpu", "cuda.yaml": "pytorch-gpu"}
    assert sorted(p.name for p in (REPO / "envs").glob("*.yaml")) == sorted(builds)
    for name, build in builds.items():
        env = yaml.safe_load((REPO / "envs" / name).read_text())
        assert env["channels"] == ["conda-forge"], name
        conda = {re.split(r"[<>=! ]", spec)[0]: spec for spec in env["dependencies"] if isinstance(spec, str)}
        assert lower_bound(conda["python"]) == lower_bound(project["requires-python"]), name
        for package, names in CONDA_NAMES.items():
            present = [n for n in names if n in conda]
            assert len(present) == 1 and lower_bound(conda[present[0]]) == wanted[package], (name, package)
        assert build in conda, name  # conda-forge's CPU or CUDA build of PyTorch
        # a pip section naming a path (pip: -e ../) breaks when the file is copied before the environment is made
        pip = [entry for spec in env["dependencies"] if isinstance(spec, dict) for entry in spec.get("pip", [])]
        assert not [entry for entry in pip if "/" in entry or entry.startswith((".", "-e"))], name


def test_every_rule_runs_in_the_environment_the_files_create_named_as_snakemake_reads_it(tmp_path, monkeypatch):
    """With --sdm conda every rule activates the environment envs/*.yaml create, by its name: Snakemake reads a
    value not ending in .yaml as an existing environment's name (an environment file would be copied before it
    is created, and traitpipe could not be installed from the copy)."""
    from snakemake.deployment.conda import CondaEnvSpecType

    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    texts = {path.name: path.read_text() for path in rules}
    directives = [re.findall(r"^\s*conda:\n\s*(.+)$", text, re.MULTILINE) for text in texts.values()]
    named = re.search(r'^CONDA_ENV = "([^"]+)"', texts["common.smk"], re.MULTILINE)[1]
    # one value for all (that every rule has one, Snakemake's lint checks: test_dry_run_of_the_demo_config)
    assert {value for found in directives for value in found} == {"CONDA_ENV"}
    monkeypatch.chdir(tmp_path)  # no folder of that name where the run starts
    assert CondaEnvSpecType.from_spec(named) == CondaEnvSpecType.NAME
    assert {yaml.safe_load(p.read_text())["name"] for p in (REPO / "envs").glob("*.yaml")} == {named}
