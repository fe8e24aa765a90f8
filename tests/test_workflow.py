"""The workflow end to end through the command line, as a user runs it."""

import json
import subprocess
import sys

from traitpipe.cli import DEMO_COLLECTION, DEMO_CONFIG, DEMO_PARAMS
from traitpipe.collection import synthesize

from conftest import write_config


def traitpipe(*args, cwd):
    return subprocess.run([sys.executable, "-m", "traitpipe", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_dry_run_of_the_demo_config(tmp_path):
    synthesize(tmp_path / DEMO_COLLECTION, **DEMO_PARAMS)
    done = traitpipe("run", "--config", str(DEMO_CONFIG), "--", "-n", "--quiet", "rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ingest" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_run_then_query(small_collection, tmp_path):
    config = write_config(tmp_path, small_collection)
    done = traitpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = str(tmp_path / "results")
    done = traitpipe("query", "--results", results, "--format", "json",
                     "select species, count(*) as n from images group by 1 order by 1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 4 and all(row["n"] == 5 for row in rows)
    done = traitpipe("query", "--results", results, "select count(*) as n from failures", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["n", "0"]
    done = traitpipe("query", "--results", results, "select * from nowhere", cwd=tmp_path)
    assert done.returncode == 2 and "tables in" in done.stderr and "images" in done.stderr
    # a second run with the same config has nothing to do
    done = traitpipe("run", "--config", str(config), "--", "-n", cwd=tmp_path)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr


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
