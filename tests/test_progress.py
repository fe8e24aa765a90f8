"""traitpipe's Snakemake logger: one line per finished step, errors and failed jobs' logs in full."""

import re
import subprocess
import sys

SNAKEFILE = """
rule all:
    input: "c.txt"

rule first:
    output: "a_{n}.txt"
    shell: "echo a > {output}"

rule second:
    input: "a_1.txt", "a_2.txt"
    output: "c.txt"
    log: "c.log"
    shell: "echo 'the cause, in the job log' > {log}; test -f go && touch {output}"
"""
PROGRESS = re.compile(r"^\[[#-]+\] +(\d+)/(\d+) +(\d+)%  (\S.*?)(?:  \((\d+) s\))?$")


def snakemake(folder, *args):
    return subprocess.run([sys.executable, "-m", "traitpipe.progress", "--cores", "1", "--logger", "traitpipe",
                           "--show-failed-logs", *args], cwd=folder, capture_output=True, text=True, timeout=120)


def progress_lines(text):
    return [m.groups()[:4] for m in map(PROGRESS.match, text.splitlines()) if m]


def test_a_run_prints_a_line_per_finished_step_and_a_failed_jobs_log(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    dry = snakemake(tmp_path, "-n")
    assert dry.returncode == 0 and "rule first:" in dry.stdout and not progress_lines(dry.stdout + dry.stderr)  # as Snakemake has it
    failed = snakemake(tmp_path)
    assert failed.returncode != 0
    lines = progress_lines(failed.stderr)  # the two independent jobs in either order
    assert [line[:3] for line in lines] == [("1", "4", "25"), ("2", "4", "50")]
    assert sorted(line[3] for line in lines) == ["first n=1", "first n=2"]
    assert "rule first:" not in failed.stderr and "Select jobs" not in failed.stderr  # no rule dumps
    assert "Error in rule second:" in failed.stderr and "the cause, in the job log" in failed.stderr
    assert re.search(r"Complete log\(s\): \S+/\.snakemake/log/", failed.stderr)  # the whole log stays on disk
    (tmp_path / "go").touch()
    done = snakemake(tmp_path)
    assert done.returncode == 0, done.stderr
    assert progress_lines(done.stderr) == [("1", "2", "50", "second"), ("2", "2", "100", "all")]
    # a group job ends as one count of all its jobs: still a line each, counted in turn
    grouped = snakemake(tmp_path, "--forceall", "--groups", "first=g", "--group-components", "g=2")
    assert grouped.returncode == 0, grouped.stderr
    lines = progress_lines(grouped.stderr)
    assert [line[:3] for line in lines] == [("1", "4", "25"), ("2", "4", "50"), ("3", "4", "75"), ("4", "4", "100")]
    assert sorted(line[3] for line in lines[:2]) == ["first n=1", "first n=2"] and lines[2][3] == "second"
