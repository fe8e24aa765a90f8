"""The Snakemake workflow catalog's conventions: .snakemake-workflow-catalog.yml, and a .test config that plain
Snakemake runs from a checkout (snakemake --cores N --directory .test) on a collection that is what
traitpipe synth writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from traitpipe.cli import SNAKEFILE
from traitpipe.collection import synthesize

REPO = Path(__file__).resolve().parents[1]


def test_the_test_collection_is_what_synth_writes(tmp_path):
    synthesize(tmp_path, n_species=4, per_species=5, size=64, seed=3)
    made = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    kept = {p.relative_to(REPO / ".test" / "collection"): p.read_bytes()
            for p in (REPO / ".test" / "collection").rglob("*") if p.is_file()}
    assert sorted(kept) == sorted(made) and all(kept[name] == made[name] for name in made)


def test_plain_snakemake_plans_the_test_config_where_the_catalog_runs_it(tmp_path):
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(catalog) == {"mandatory-flags", "software-stack-deployment", "report"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--cores", "2",
                           "--directory", str(REPO / ".test"), "-n", "--quiet", "rules"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "segment" in done.stdout + done.stderr and not (REPO / ".test" / "results").exists()
