"""The workflow on a real SLURM through the slurm profile (make cluster-test; not part of make test).

Needs a running SLURM whose partitions the profile names ("cpu", "gpu") and whose node has GPUs to give
(scripts/local-slurm.sh starts one on a Debian machine), and Snakemake's SLURM executor plugin.
"""

import os
import shutil
import subprocess
import sys

import pytest

from traitpipe.cli import SNAKEFILE

from conftest import result_differences, write_config
from test_workflow import GPU_RULES, traitpipe

pytestmark = pytest.mark.cluster


def test_the_workflow_through_slurm_gives_the_local_run_tables(small_collection, tmp_path):
    """The tiny workflow run on this machine, then through sbatch (array jobs, GPU requests): same tables, same maps."""
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        pytest.fail("no SLURM answers here: start one with `sudo bash scripts/local-slurm.sh`")
    root = shutil.copytree(small_collection, tmp_path / "collection")
    config = write_config(tmp_path, root, device="auto")  # GPU rules ask SLURM for a GPU (and find none to use)
    results = tmp_path / "results"
    # A job's threads set the order of its floating-point sums, and so their last bits: the local run gives each
    # model job what it gets under SLURM, the profile's 8 threads capped at the node's CPUs.
    threads = min(8, os.cpu_count())
    done = traitpipe("run", "--config", str(config), "--", "--cores", str(threads), "--max-threads", str(threads),
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    local = results.rename(tmp_path / "local")

    profile = SNAKEFILE.parent / "profiles" / "slurm"
    done = subprocess.run([sys.executable, "-m", "traitpipe", "run", "--config", str(config), "--", "--profile",
                           str(profile), "--slurm-no-account", "--slurm-status-command", "squeue", "--latency-wait", "5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800)  # sbatch and squeue take time
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert result_differences(local, results) == []
    # what SLURM was asked for: each job of this run as scontrol lists it (local-slurm.sh keeps finished jobs an hour)
    listed = subprocess.run(["scontrol", "--oneliner", "show", "job"], capture_output=True, text=True).stdout
    jobs = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in listed.splitlines()]
    jobs = [job for job in jobs if job.get("WorkDir") == str(tmp_path) and job.get("Comment", "").startswith("rule_")]
    rules = [job["Comment"][len("rule_"):].split("_wildcards_")[0] for job in jobs]  # rule_<rule>[_wildcards_<values>]
    assert {"classifier", "segment", "explain", "ingest", "cam_parts", "report"} <= set(rules)
    for rule, job in zip(rules, jobs):
        assert ("gres:gpu:1" in job.get("TresPerJob", "")) == (rule in GPU_RULES), (rule, job)
        assert job["Partition"] == ("gpu" if rule in GPU_RULES else "cpu") and job["JobState"] == "COMPLETED", job
    assert "Submitted array job" in log and any(job.get("ArrayJobId") for job in jobs)  # the shard rules
