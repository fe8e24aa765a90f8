"""The skeleton every job shares: parse the files its rule hands over, read the run config, pick the
device, write its tables and failures under one provenance, say what it did.

A job module is then read, call, write::

    def main(argv=None):
        step = Step("codes", argv, paths=("images", "weights", "description", "codes", "failures"))
        rows = read_rows(step.args.images)
        ...                                    # compute with traitpipe.<stage>
        step.record(precision=..., models=...)  # what the outputs were made with
        step.write("codes", table, step.args.codes)
        step.write_failures(failures)
        step.finish(f"{len(rows)} images")
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from traitpipe.store.provenance import provenance
from traitpipe.store.tables import write_table


def job_arguments(name: str, *options: str, paths: tuple[str, ...] = (), lists: tuple[str, ...] = (),
                  optional: tuple[str, ...] = (), references: bool = False) -> argparse.ArgumentParser:
    """Parser of ``traitpipe job <name>``: ``--config RUN_CONFIG``, ``--threads N`` and the files the rule hands over.

    Parameters
    ----------
    name : str
    options : str
        Required plain values (``method``).
    paths : tuple of str
        Required files, one each (``--images PATH``).
    lists : tuple of str
        Lists of files (``--tables A B C``; may be empty).
    optional : tuple of str
        Files a rule hands over only when the config has them (``--phylogeny PATH``; None otherwise).
    references : bool
        Take ``--reference SPECIES IMAGE MASK`` (repeatable): each species' labelled reference;
        ``args.reference`` is then a dict species -> (image file, mask file).

    Every path a job reads or writes arrives this way: jobs derive no path (the rule's
    ``input:`` and ``output:`` are the one place that names them).
    """
    parser = argparse.ArgumentParser(prog=f"traitpipe job {name}")
    parser.add_argument("--config", required=True, help="the run's resolved config (results/run/config.json)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    for option in (*options, *paths):
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, required=True)
    for option in lists:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, nargs="*", default=[])
    for option in optional:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, default=None)
    if references:
        parser.add_argument("--reference", nargs=3, action=_References, default={},
                            metavar=("SPECIES", "IMAGE", "MASK"), help="a species' support image and mask")
    return parser


class _References(argparse.Action):
    """Collects ``--reference SPECIES IMAGE MASK`` options into one dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        species, image, mask = values
        setattr(namespace, self.dest, {**getattr(namespace, self.dest), species: (image, mask)})


def read_run_config(path: str | Path) -> dict:
    """The run config the workflow validated when it was parsed, every default filled
    (``results/run/config.json``): read as it is, not validated again."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"run config {path} not found: jobs run from the workflow (traitpipe run), which writes it")
    return json.loads(path.read_text())


class Step:
    """One job run: its command line, run config and device, and the provenance its outputs carry.

    Parameters
    ----------
    name : str
        The job's name (``traitpipe job <name>``), for the parser and messages.
    argv : list of str or None
        The command line (None: ``sys.argv``).
    *options, paths, lists, optional, references
        The files and values the rule hands over, see :func:`job_arguments`.
    compute : bool
        The job runs models: set torch's CPU threads (``--threads``) and resolve ``config["device"]``.

    Attributes
    ----------
    args : argparse.Namespace
    config : dict
        The run config.
    device : torch.device or None
        Where the job computes (None for a job that runs no model).
    provenance : dict
        What the outputs were made with; :meth:`record` sets it, :meth:`write` adds it to every table.
    """

    def __init__(self, name: str, argv: list[str] | None, *options: str, paths: tuple[str, ...] = (),
                 lists: tuple[str, ...] = (), optional: tuple[str, ...] = (), references: bool = False,
                 compute: bool = True):
        self.name = name
        self.args = job_arguments(name, *options, paths=paths, lists=lists, optional=optional,
                                  references=references).parse_args(argv)
        self.config = read_run_config(self.args.config)
        self.device = None
        if compute:
            import torch  # only the jobs that compute pay for importing torch

            from traitpipe.jobs.devices import resolve_device
            from traitpipe.models.device import seed_everything

            if self.args.threads:
                torch.set_num_threads(self.args.threads)
            self.device = resolve_device(self.config["device"])
            seed_everything(0)  # deterministic kernels; a training job seeds again with its section's seed
        self.provenance = provenance(self.config, **self._device())

    def _device(self) -> dict:
        return {} if self.device is None else {"device": str(self.device)}

    def checkpoint(self, section: str) -> str | None:
        """The config's ``<section>.checkpoint``, its sha256 checked first when ``<section>.checkpoint_sha256``
        gives one (a mismatch stops the job before anything is loaded or written)."""
        from traitpipe.models.checkpoints import CheckpointError, verify_sha256

        value, expected = self.config[section]["checkpoint"], self.config[section]["checkpoint_sha256"]
        if expected is not None:
            if not Path(value).is_file():
                raise SystemExit(f"{self.name}: {section}.checkpoint_sha256 checks a local file; {value!r} is none")
            try:
                verify_sha256(value, expected, f"{section}.checkpoint")
            except CheckpointError as error:
                raise SystemExit(f"{self.name}: {error}") from None
        return value

    def record(self, **fields) -> dict:
        """Set the provenance of the outputs: ``precision``, ``models`` (see ``traitpipe.store.provenance``)."""
        self.provenance = provenance(self.config, **self._device(), **fields)
        return self.provenance

    def write(self, table: str, rows: pd.DataFrame | Iterable[dict], path: str | Path,
              extra: list[str] | None = None) -> Path:
        """Write one table file: a frame, or records (dicts) whose columns the schema names."""
        return write_table(rows, path, table, self.provenance, extra)

    def write_failures(self, failures: pd.DataFrame | Iterable[dict]) -> Path:
        """Write the step's ``failures`` rows (an empty file when all went well) to ``--failures``."""
        return self.write("failures", failures, self.args.failures)

    def finish(self, message: str) -> None:
        """Say what the step did (stderr: the rule's log)."""
        print(f"{self.name}: {message}", file=sys.stderr)
