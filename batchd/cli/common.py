"""What every command shares: the consoles, exit codes, settings from flags, run lookup and the
end-of-run summary."""

from __future__ import annotations

import os
import re
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

from batchd.config.settings import Settings, load_settings
from batchd.errors import BatchdError
from batchd.run.endings import RUN_FAILED
from batchd.run.identity import parse_deadline
from batchd.run.pipeline import RUN_CANCELED, RUN_SUCCEEDED
from batchd.run.services import Services
from batchd.state.base import RUN_DONE, Run
from batchd.storage.s3 import join

EXIT_OK, EXIT_ERROR, EXIT_FAILED_LINES, EXIT_CANCELED, EXIT_INTERRUPTED = 0, 1, 3, 4, 130
DISTRIBUTED_REFRESH_S = 0.5

# Piped output is not cut to 80 columns: run ids and paths must stay whole.
PIPE_WIDTH = 200
_SIZED = sys.stdout.isatty() or "COLUMNS" in os.environ  # a terminal, or a width asked for
out = Console(width=None if _SIZED else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() or _SIZED else PIPE_WIDTH)


JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]


class Export(StrEnum):
    openai_jsonl = "openai-jsonl"


class Fallback(StrEnum):
    realtime = "realtime"
    flex = "flex"
    none = "none"


class ResultsFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    path = "path"


def cli_settings(**cli: Any) -> Settings:
    return load_settings(cli={k: v for k, v in cli.items() if v is not None})


def run_deadline(deadline: str | None, within: str | None, now: float) -> float | None:
    """--deadline (a time, or a duration) or --within (a duration); not both."""
    if deadline and within:
        raise BatchdError("Give --deadline or --within, not both.", "Drop one of them.")
    if within and not re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[smhd]\s*", within):
        raise BatchdError(
            f"Cannot read --within {within!r}.", "Use a duration like 12h, 90m or 2d."
        )
    return parse_deadline(deadline or within, now)


def exit_code(run: Run) -> int:
    if run.state != RUN_DONE:
        return EXIT_OK
    if run.outcome == RUN_CANCELED:
        return EXIT_CANCELED
    if run.outcome == RUN_FAILED:
        return EXIT_ERROR
    return EXIT_OK if run.outcome == RUN_SUCCEEDED else EXIT_FAILED_LINES


def raise_if_failed(run: Run) -> None:
    """A run that ended without its results is an error (one red line, exit 1)."""
    if run.state == RUN_DONE and run.outcome == RUN_FAILED:
        raise BatchdError(
            f"Run {run.run_id} ended without results: {run.error}.",
            "Fix that and submit the file again, with --output somewhere writable if that "
            "was the cause: answers already paid for come from the cache.",
        )


def get_run(svc: Services, run_id: str) -> Run:
    run = svc.store.get_run(run_id)
    if run is None:
        raise BatchdError(
            f"No run {run_id!r} in {svc.home}.",
            "List runs with `batchd status` (and check BATCHD_HOME).",
        )
    return run


def print_summary(svc: Services, run: Run) -> None:
    st = run.stats or {}
    counts = st.get("status_counts", {})
    cost = st.get("cost_usd", 0.0)
    base = st.get("baseline_cost_usd", 0.0)
    out.print(f"[bold]run {run.run_id}[/] {run.outcome or run.state}")
    if run.state == RUN_DONE and "status_counts" not in st:  # ended without results
        out.print(f"  no results: {run.error or run.outcome}")
        return
    out.print("  rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    out.print(f"  cost ${cost:,.4f}  (realtime list price ${base:,.4f}, saved ${base - cost:,.4f})")
    out.print(f"  results: {join(run.output, run.output_name(), 'results.parquet')}")
    invalid = (st.get("ingest") or {}).get("invalid_by_type") or {}
    if invalid:
        out.print(
            "  invalid lines by reason: "
            + ", ".join(f"{k} {v}" for k, v in sorted(invalid.items()))
        )
        out.print("  see the error_message column of the invalid rows for each line's reason")
    unmeetable = (st.get("plan") or {}).get("unmeetable") or {}
    if unmeetable:
        out.print(
            f"  failed deadline_unmeetable: {sum(unmeetable.values())} lines no venue can finish "
            "before their deadline ("
            + ", ".join(f"{k} {v}" for k, v in sorted(unmeetable.items()))
            + "); see their error_message"
        )
