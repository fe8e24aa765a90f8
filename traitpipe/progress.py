"""What a person watching a run sees: one line per finished step with an overall progress bar.

A Snakemake logger plugin (``--logger traitpipe``) in place of Snakemake's stream handler. On a run it
prints, instead of each job's rule dump, one line when a job finishes::

    [#########---------------] 12/33   36%  explain shard=00000 method=gradcam  (41 s)

Everything else passes through Snakemake's own filter and formatter: the job table at the start, warnings,
errors (a failed job's rule, its log file, and with ``--show-failed-logs`` the log itself), "Nothing to be
done", the path of the complete log Snakemake keeps in ``.snakemake/log``. A dry run or ``--verbose`` run
prints exactly what Snakemake prints.

Snakemake finds logger plugins among installed top-level packages named ``snakemake_logger_plugin_*``,
which an editable install does not provide; ``python -m traitpipe.progress ARGS`` registers this module
as the plugin ``traitpipe`` and runs Snakemake's command line on ``ARGS``.
"""

from __future__ import annotations

import sys
import time
from logging import LogRecord

from snakemake.logging import DefaultFilter
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

#: The plugin's name for ``snakemake --logger``.
NAME = "traitpipe"
#: The events a run's progress lines stand in for: a job's or a group's start (its rule dump), its end, the
#: scheduler's rounds, the "n of m steps done" count. Shell commands print with ``--printshellcmds``.
REPLACED = {LogEvent.JOB_INFO, LogEvent.GROUP_INFO, LogEvent.JOB_STARTED, LogEvent.JOB_FINISHED, LogEvent.PROGRESS}
#: The scheduler's message at each round of job selection (logged without an event).
ROUND_MESSAGE = "Select jobs to execute..."


def progress_line(done: int, total: int, step: str, seconds: float | None, width: int = 24) -> str:
    """One finished step, with the run's overall progress.

    Parameters
    ----------
    done, total : int
        Steps finished so far (this one included), and steps in the run.
    step : str
        The finished step: its rule and wildcards.
    seconds : float or None
        How long the step took, when known.
    width : int
        Characters of the bar.

    Returns
    -------
    str

    Examples
    --------
    >>> progress_line(3, 12, "explain shard=00000", 41.2, width=12)
    '[###---------]  3/12   25%  explain shard=00000  (41 s)'
    >>> progress_line(12, 12, "report", None, width=12)
    '[############] 12/12  100%  report'
    """
    filled = round(width * done / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    digits = len(str(total))
    share = f"{100 * done / total:.0f}%" if total else "100%"
    line = f"[{bar}] {done:>{digits}}/{total}  {share:>4}  {step}"
    return line if seconds is None else f"{line}  ({seconds:.0f} s)"


def step_name(rule: str, wildcards: dict) -> str:
    """A job as a person names it: its rule, then its wildcards.

    Examples
    --------
    >>> step_name("explain", {"shard": "00000", "method": "gradcam"})
    'explain shard=00000 method=gradcam'
    """
    return " ".join([rule, *(f"{key}={value}" for key, value in wildcards.items())])


class LogHandler(LogHandlerBase):
    """Snakemake's log as one line per finished step (see the module's docstring)."""

    def __post_init__(self) -> None:
        settings = self.common_settings
        self.stream = sys.stdout if settings.stdout else sys.stderr
        # Snakemake's own filter (--quiet, --printshellcmds, --debug-dag) comes first
        self.snakemake_filter = DefaultFilter(settings.quiet, settings.debug_dag, settings.verbose, settings.dryrun,
                                              settings.printshellcmds)
        self.everything = settings.dryrun or settings.verbose
        self.running: dict[int, tuple[str, float]] = {}  # job id: (step, start on the monotonic clock)
        self.finished: list[int] = []  # job ids finished and not yet on a progress line

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return False  # Snakemake's formatter, for what passes through

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record: LogRecord) -> None:
        try:
            event = getattr(record, "event", None)
            if event == LogEvent.JOB_INFO:  # noted even when --quiet rules hides it
                self.running[record.jobid] = (step_name(record.rule_name, record.wildcards), time.monotonic())
            elif event == LogEvent.JOB_FINISHED:
                self.finished.append(record.job_id)
            if not self.snakemake_filter.filter(record):
                return
            if self.everything or (event not in REPLACED and record.msg != ROUND_MESSAGE):
                text = self.format(record)
                if text and text != "None":
                    self._write(text)
            elif event == LogEvent.PROGRESS:
                # a group job ends as one count of all its jobs: a line for each
                first = record.done - len(self.finished) + 1
                for done, job in enumerate(self.finished, start=first):
                    step, started = self.running.pop(job, ("a step", None))
                    seconds = None if started is None else time.monotonic() - started
                    self._write(progress_line(done, record.total, step, seconds))
                self.finished.clear()
        except Exception:
            self.handleError(record)

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> None:
    """Run Snakemake's command line with this module registered as the logger plugin ``traitpipe``."""
    from snakemake.cli import main as snakemake_main
    from snakemake_interface_logger_plugins.common import logger_plugin_module_prefix
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

    LoggerPluginRegistry().register_plugin(logger_plugin_module_prefix + NAME, sys.modules[__name__])
    snakemake_main(argv)


if __name__ == "__main__":
    main()
