"""The ``traitpipe`` command: synth, run, demo, query, validate, fetch, profile, and the workflow's jobs."""

from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

from traitpipe.jobs import JOBS

REPO = Path(__file__).resolve().parents[1]
# The workflow ships inside the package (traitpipe/workflow links to the repository's workflow/), so an
# installed traitpipe runs from any folder.
SNAKEFILE = Path(__file__).parent / "workflow" / "Snakefile"
DEMO_CONFIG = REPO / "config" / "config.yaml"
#: The demo's synthetic collection: where it goes and how it is drawn.
DEMO_COLLECTION = Path("resources/demo-collection")
DEMO_PARAMS = {"n_species": 8, "per_species": 12, "size": 128, "seed": 0, "damaged": 2}
SAMPLE_QUERY = "select species, count(*) as images from images group by 1 order by 1"


def _fail(message: str) -> None:
    print(f"traitpipe: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def cmd_synth(args: argparse.Namespace) -> None:
    from traitpipe.collection import synthesize

    out = synthesize(args.out, n_species=args.species, per_species=args.per_species, size=args.size, seed=args.seed)
    print(f"wrote {args.species * args.per_species} images of {args.species} species to {out}")


def _given(args: list[str], *options: str) -> bool:
    """Whether a command line names any of these options (alone or as ``--option=value``)."""
    return any(a in options or a.startswith(tuple(f"{o}=" for o in options)) for a in args)


def run_workflow(config_path: str | Path, snakemake_args: list[str]) -> int:
    """Run the workflow on a config file with Snakemake.

    The config is validated once, when the workflow is parsed (a bad one stops the run there,
    before any job, with exit status 2). Unless ``snakemake_args`` name a ``--logger``, the run prints one
    line per finished step (:mod:`traitpipe.progress`) and a failed job's log.

    Parameters
    ----------
    config_path : str or Path
        The config file.
    snakemake_args : list of str
        Passed on to Snakemake (e.g. ``-n``, ``--profile workflow/profiles/slurm``).

    Returns
    -------
    int
        Snakemake's exit status.
    """
    if not Path(config_path).is_file():
        _fail(f"config file not found: {config_path}")
    if not SNAKEFILE.is_file():
        _fail(f"workflow not found at {SNAKEFILE}: this traitpipe install lacks its workflow; reinstall it (pip install .)")
    # Snakemake's command line, with traitpipe's logger plugin registered (traitpipe.progress)
    # the user's config replaces the Snakefile's default configfile (a config/config.yaml where it runs), whole
    command = [sys.executable, "-m", "traitpipe.progress", "--snakefile", str(SNAKEFILE), "--configfile",
               str(config_path), "--replace-workflow-config"]
    if not _given(snakemake_args, "--logger"):
        # one line per finished step and a progress bar; a failed job's log printed in full
        command += ["--logger", "traitpipe", "--show-failed-logs"]
    if _given(snakemake_args, "--profile"):
        # Snakemake would merge the one-machine profile (workflow/profiles/default) over the user's, its
        # GPU count and latency-wait included: a named profile (the slurm one) is the whole setting.
        command += ["--workflow-profile", "none"]
    elif not _given(snakemake_args, "-c", "--cores", "-j", "--jobs", "--executor", "-e"):
        command += ["--cores", "all"]
    status = subprocess.call(command + snakemake_args)
    if status and any(Path(".snakemake", "locks").glob("*.lock")):
        # a failed run releases its locks; locks left behind are a killed run's, and Snakemake refused this one
        print(f"traitpipe: this folder is locked by a workflow run that did not finish (killed?). If no other run "
              f"is going, unlock it and run again: traitpipe run --config {config_path} -- --unlock . The killed "
              "run's half-written outputs are never under their final names; Snakemake redoes its incomplete jobs.",
              file=sys.stderr)
    return status


def cmd_run(args: argparse.Namespace) -> None:
    raise SystemExit(run_workflow(args.config, args.snakemake_args))


def _demo_collection() -> Path:
    """Synthesize the demo collection unless the same one is already there (keeps Snakemake's timestamps)."""
    from traitpipe.collection import synthesize
    from traitpipe.collection.synthetic import GENERATOR_VERSION

    stamp = DEMO_COLLECTION / "collection.json"
    if stamp.is_file():
        written = json.loads(stamp.read_text())
        if {k: written.get(k) for k in DEMO_PARAMS} == DEMO_PARAMS and written.get("version") == GENERATOR_VERSION:
            return DEMO_COLLECTION
    print(f">> writing the synthetic demo collection to {DEMO_COLLECTION}", flush=True)
    return synthesize(DEMO_COLLECTION, **DEMO_PARAMS)


def cmd_demo(args: argparse.Namespace) -> None:
    from traitpipe.config import load_config
    from traitpipe.store.query import connect

    _demo_collection()
    print(f">> running the workflow on {DEMO_CONFIG} (CPU)", flush=True)
    status = run_workflow(DEMO_CONFIG, ["--cores", str(os.cpu_count() or 1), *args.snakemake_args])
    if status:
        raise SystemExit(status)
    results = Path(load_config(DEMO_CONFIG)["results"]).resolve()
    print(f"\n>> done. Results are in {results}")
    print(f"   report (read it first): {results / 'report.html'}")
    print(f"   tables: {results / 'tables'}   maps: {results / 'maps'}   figures: {results / 'figures'}")
    print(f'\n>> sample query: traitpipe query "{SAMPLE_QUERY}"')
    print(connect(results).sql(SAMPLE_QUERY).df().to_string(index=False))


def cmd_query(args: argparse.Namespace) -> None:
    import csv

    import duckdb

    from traitpipe.store.query import connect, table_names

    try:
        relation = connect(args.results).sql(args.sql)
        columns, rows = (relation.columns, relation.fetchall()) if relation is not None else ([], [])
    except FileNotFoundError as error:
        _fail(str(error))
    except duckdb.Error as error:
        _fail(f"{error}\n(tables in {args.results}: {', '.join(table_names(args.results)) or 'none'})")
    if args.format == "json":  # SQL NULL stays null (never NaN)
        print(json.dumps([dict(zip(columns, row)) for row in rows], indent=1, default=str))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        import pandas as pd

        print(pd.DataFrame(rows, columns=columns).to_string(index=False) if rows else "(no rows)")


def cmd_validate(args: argparse.Namespace) -> None:
    from traitpipe.collection.fetch import fetch_summary
    from traitpipe.collection.manifest import ManifestError, load_manifest
    from traitpipe.collection.urls import media_folder
    from traitpipe.collection.validate import collection_config, validate_collection
    from traitpipe.config import ConfigError
    from traitpipe.preflight import preflight
    from traitpipe.store.provenance import provenance
    from traitpipe.store.tables import table_path, write_table

    try:
        config = collection_config(args.source, args.root)
        if args.show:
            print(json.dumps(config, indent=1))
            return
        manifest = load_manifest(config)
    except (ConfigError, ManifestError) as error:
        _fail(str(error))
    problems = preflight(config, manifest)
    if problems:  # before reading any image: a run would stop here too
        _fail("a run of this config would stop before its first job:\n  " + "\n  ".join(problems))
    images, failures, found = validate_collection(config, manifest)
    prov, ranks = provenance(config), list(config["collection"]["columns"]["ranks"])
    write_table(images, table_path(args.out, "images", "all"), "images", prov, ranks)
    write_table(failures, table_path(args.out, "failures", "all", "ingest"), "failures", prov)
    print(f"{args.source}: {found['usable_images']} usable images, {found['failures']} failures "
          f"(tables under {Path(args.out) / 'tables'})")
    if found["urls"]:
        fetch = found["fetch"]
        print(f"  {found['urls']} media are URLs: " + (
            "not read (set collection.fetch.enabled: true to download them first)" if fetch is None else
            fetch_summary(fetch, media_folder(config))))
    for name, n in found["usable_per_species"].items():
        print(f"  {n:6d}  {name}")
    for kind, n in found["failures_by_reason"].items():
        print(f"  failed: {n} x {kind}")
    for key, what in (("without_reference_mask", "species without a reference mask (SST skips them)"),
                      ("too_few_for_sst", "species with fewer than 2 usable images (SST needs a reference and "
                                          "a query)")):
        if found[key]:
            print(f"  {len(found[key])} {what}: {', '.join(found[key])}")
    if not found["usable_images"]:
        _fail("no usable image: see the reasons above (and the failures table)")


def cmd_fetch(args: argparse.Namespace) -> None:
    from traitpipe.collection.fetch import fetch_collection, fetch_summary
    from traitpipe.collection.manifest import ManifestError, load_manifest
    from traitpipe.collection.shards import shard_rows
    from traitpipe.collection.urls import is_url, media_folder
    from traitpipe.config import ConfigError, load_config
    from traitpipe.plan import shard_size

    try:
        config = load_config(args.config)
        manifest = load_manifest(config)
    except (ConfigError, ManifestError) as error:
        _fail(str(error))
    urls = int(manifest["path"].map(is_url).sum())
    _, counts = fetch_collection(config, shard_rows(manifest, shard_size(config, manifest["species"])))
    print(f"{args.config}: {urls} media are URLs; {fetch_summary(counts, media_folder(config))}")
    if not config["collection"]["fetch"]["enabled"]:
        print("  a run reads them once the config sets collection.fetch.enabled: true")


def cmd_profile(args: argparse.Namespace) -> None:
    import shutil

    source, out = SNAKEFILE.parent / "profiles" / args.name, Path(args.out)
    if out.exists():
        _fail(f"{out} exists: name a new folder for the profile (nothing was written)")
    shutil.copytree(source, out)
    print(f"{out}: a copy of traitpipe's {args.name} profile; set its partitions, memory and run times, then\n"
          f"  traitpipe run --config my.yaml -- --profile {out}")


def cmd_check_report(args: argparse.Namespace) -> None:
    from traitpipe.report.browser import check_page

    screenshot = args.screenshot or str(Path(args.report).with_suffix(".png"))
    try:
        result = check_page(args.report, screenshot, timeout=args.timeout)
    except (FileNotFoundError, TimeoutError) as error:
        _fail(str(error))
    problems = result["errors"] + result["broken_images"]
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    print(f"{args.report}: {result['images']} images, {len(result['broken_images'])} broken, "
          f"{len(result['errors'])} console errors; screenshot {result['screenshot']}")
    if problems:
        sys.exit(1)


def cmd_findings(args: argparse.Namespace) -> None:
    from traitpipe.report.findings import findings, replace_findings
    from traitpipe.store.query import connect, table_names

    try:
        if "evaluation" not in table_names(args.results):
            _fail(f"no evaluation table in {args.results}: run the workflow to its end first")
        block = findings(connect(args.results).sql("select * from evaluation").df())
    except FileNotFoundError as error:
        _fail(str(error))
    if args.write is None:
        print(block, end="")
        return
    target = Path(args.write)
    try:
        target.write_text(replace_findings(target.read_text(), block))
    except (OSError, ValueError) as error:
        _fail(f"{target}: {error}")
    print(f"{target}: findings written from {args.results}")


def cmd_job(args: argparse.Namespace) -> None:
    try:
        JOBS[args.name](args.job_args)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # outputs are written aside and renamed when complete (traitpipe.store.atomic): nothing partial stays
        _fail(f"job {args.name}: no space left to write {error.filename or 'its outputs'} ({error.strerror}). "
              "Nothing partial was kept under a final name: free space, or set results to a larger disk, and run "
              "again")


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    top = argparse.ArgumentParser(prog="traitpipe", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic collection with known answers")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--species", type=int, default=8)
    synth.add_argument("--per-species", type=int, default=12)
    synth.add_argument("--size", type=int, default=128)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth)

    run = sub.add_parser("run", help="run the workflow on a config: traitpipe run --config FILE [-- snakemake args]")
    run.add_argument("--config", required=True)
    run.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="synthesize the demo collection and run the whole workflow on CPU")
    demo.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    demo.set_defaults(func=cmd_demo)

    query = sub.add_parser("query", help="SQL (DuckDB) over the result tables, one view per table")
    query.add_argument("sql")
    query.add_argument("--results", default="results")
    query.add_argument("--format", choices=("table", "json", "csv"), default="table")
    query.set_defaults(func=cmd_query)

    validate = sub.add_parser("validate", help="ingest a collection without running a model: images and failures "
                              "tables, a summary, and the checks a run makes first (tree species, checkpoint files, "
                              "layer names); --show prints the config with defaults")
    validate.add_argument("source", help="a config file (.yaml, .json) or a manifest (.csv, .tsv, .parquet)")
    validate.add_argument("--root", default=None, help="the collection root (default: the config's, or the "
                          "manifest's folder)")
    validate.add_argument("--out", default="results", help="where the tables go (default: results)")
    validate.add_argument("--show", action="store_true")
    validate.set_defaults(func=cmd_validate)

    fetch = sub.add_parser("fetch", help="download the media a config's manifest names by http(s) URL into its "
                                        "media folder (collection.fetch: what a run with it enabled does first)")
    fetch.add_argument("config")
    fetch.set_defaults(func=cmd_fetch)

    profile = sub.add_parser("profile", help="copy a Snakemake profile shipped with traitpipe (slurm: the cluster "
                                            "settings; default: one machine) into a folder, to edit and run with")
    profile.add_argument("name", choices=("slurm", "default"))
    profile.add_argument("out", help="a new folder")
    profile.set_defaults(func=cmd_profile)

    check = sub.add_parser("check-report", help="open a report in headless chromium: console errors, broken images, "
                                                "a screenshot (exit 1 on any problem)")
    check.add_argument("report", nargs="?", default="results/report.html")
    check.add_argument("--screenshot", default=None, help="PNG to write (default: next to the report)")
    check.add_argument("--timeout", type=float, default=120)
    check.set_defaults(func=cmd_check_report)

    found = sub.add_parser("findings", help="what a run found, every number from its evaluation table (Markdown); "
                                            "--write FILE rewrites that file's findings block (docs/findings.md's)")
    found.add_argument("--results", default="results")
    found.add_argument("--write", default=None)
    found.set_defaults(func=cmd_findings)

    job = sub.add_parser("job", help="run one workflow step (called by the workflow's rules)")
    job.add_argument("name", choices=list(JOBS))
    job.add_argument("job_args", nargs=argparse.REMAINDER)
    job.set_defaults(func=cmd_job)
    return top


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``traitpipe`` console script."""
    args = parser().parse_args(argv)
    if getattr(args, "snakemake_args", None) and args.snakemake_args[0] == "--":
        args.snakemake_args = args.snakemake_args[1:]
    args.func(args)
