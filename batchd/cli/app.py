"""batchd command line: thin commands over library calls.

Exit codes:
  0  the command worked; for submit/status of a finished run: every line succeeded
  1  error: the red line says what went wrong and what to do (BATCHD_DEBUG=1 shows the traceback)
  2  bad usage (unknown option, missing argument)
  3  the run finished, and some lines did not succeed (failed, expired or invalid rows)
  4  the run was canceled
  130 interrupted (Ctrl-C): the run is kept; the same `batchd submit` resumes it
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from batchd.cli import dry_run, runs, submit, triggers
from batchd.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, err
from batchd.cli.failures import debug_on, explain

app = typer.Typer(
    help="batchd: run files of LLM requests at the lowest cost before their deadline.\n\n"
    "Repeats are answered from a cache, the rest go to vendor Batch APIs (50% off), and every "
    "input line ends as one row, with its cost, in results.parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (
    submit.submit,
    dry_run.plan,
    runs.status,
    runs.results,
    runs.report,
    runs.cancel,
    triggers.watch,
):
    app.command()(command)
app.add_typer(triggers.jobs_app, name="jobs")


def main() -> None:
    debug = debug_on()
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        err.print("Interrupted. The run is kept: run the same `batchd submit` to resume it.")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # every error path is one red line; the traceback only in debug
        if debug:
            raise
        line = explain(exc)
        text = " ".join(f"{line.message} {line.hint}".split())  # one line, whatever it holds
        err.print(f"[red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
