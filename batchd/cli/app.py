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
from typing import Annotated

import typer
from rich.markup import escape

from batchd import __version__
from batchd.cli import catalog, dry_run, report, runs, submit, triggers
from batchd.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, err
from batchd.cli.failures import debug_on, explain

EPILOG = """\b
Exit codes:
  0    the command worked (submit: every line succeeded)
  1    error: one line says what to fix (BATCHD_DEBUG=1 adds the traceback)
  2    bad usage (unknown option, missing argument)
  3    submit, cancel: the run finished with lines not succeeded
  4    submit, cancel: the run was canceled
  130  interrupted (Ctrl-C): the run is kept; the same submit resumes it

\b
Environment:
  OPENAI_API_KEY     OpenAI key (OPENAI_BASE_URL: another endpoint)
  ANTHROPIC_API_KEY  Anthropic key (ANTHROPIC_BASE_URL likewise)
  GEMINI_API_KEY     Gemini key, or GOOGLE_API_KEY (GOOGLE_GEMINI_BASE_URL)
  BATCHD_HOME        state and cache (default: ./.batchd if it exists,
                     else ~/.local/state/batchd)
  BATCHD_CONFIG      settings file (default ./batchd.toml)
  BATCHD_REDIS_URL   distributed mode (redis://host:6379/0)
  BATCHD_<KEY>       any setting; `batchd settings` lists them
"""

app = typer.Typer(
    help="batchd: run files of LLM requests at the lowest cost before their deadline.\n\n"
    "Repeats are answered from a cache, the rest go to vendor Batch APIs (50% off), and every "
    "input line ends as one row, with its cost, in results.parquet.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags as flags, [defaults] kept, fits 80 columns
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"batchd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """batchd: run files of LLM requests at the lowest cost before their deadline."""


for command in (
    submit.submit,
    dry_run.plan,
    runs.status,
    runs.results,
    report.report,
    runs.cancel,
    triggers.watch,
    catalog.models,
    catalog.settings,
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
