"""Follow, read, explain and stop runs: `batchd status`, `results`, `report`, `cancel`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from batchd.cli.common import (
    ResultsFormat,
    cli_settings,
    err,
    exit_code,
    get_run,
    out,
    print_summary,
)
from batchd.cli.driving import drive_in_process
from batchd.cli.progress import Progress, snapshot
from batchd.errors import BatchdError
from batchd.run.cancel import request_cancel
from batchd.run.identity import driver_lock
from batchd.run.services import open_services
from batchd.state.base import CHUNK_COLLECTED, RUN_DONE, RUN_INGESTING, Run


def status(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[RUN]", help="Run id; none lists recent runs.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """Show a run's state and counts (or list recent runs).

    Exits 0 whenever it could show the run, however the run ended (its outcome is in the
    output); 1 when there is no such run.
    """
    svc = open_services(cli_settings())
    try:
        if run_id is None:
            runs = svc.store.list_runs()
            if as_json:
                listing = {"home": str(svc.home), "runs": [_run_doc(r) for r in runs]}
                sys.stdout.write(msgspec.json.encode(listing).decode() + "\n")
                return
            table = Table("run", "state", "outcome", "source", "created (UTC)")
            for r in runs:
                table.add_row(
                    r.run_id,
                    r.state,
                    r.outcome or "-",
                    r.source,
                    datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%d %H:%M"),
                )
            out.print(table)
            err.print(f"{len(runs)} runs in {svc.home}" + ("" if runs else _no_runs_hint()))
            return
        run = get_run(svc, run_id)
        snap = snapshot(run, svc.store.chunks(run_id), None)
        if as_json:
            doc: dict[str, Any] = {**_run_doc(run), "home": str(svc.home)}
            doc.update(progress=snap, stats=run.stats)
            sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
            return
        for k, v in snap.items():
            out.print(f"{k:>22}: {v}")
        if run.state == RUN_DONE:
            print_summary(svc, run)
    finally:
        svc.close()


def _run_doc(r: Run) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "state": r.state,
        "outcome": r.outcome,
        "source": r.source,
        "output": r.output,
        "created_at": datetime.fromtimestamp(r.created_at, UTC).isoformat(),
    }


def _no_runs_hint() -> str:
    return (
        " (runs live in the home of the machine and directory that started them: set "
        "BATCHD_HOME to that home, or run where its ./.batchd is)"
    )


@contextmanager
def run_output(run_id: str, name: str) -> Iterator[tuple[str, Path]]:
    """(URI, local path) of one output file of a finished run; an S3 output is downloaded."""
    out = _finished_output(run_id)
    with out.local(name) as path:
        yield out.uri(name), path


def _finished_output(run_id: str) -> Any:
    """The output blobs (<output>/<run_id>/, local or S3) of a finished run."""
    svc = open_services(cli_settings())
    try:
        run = get_run(svc, run_id)
    finally:
        svc.close()
    out = svc.output(run.output, run.output_name())
    if run.state == RUN_DONE and "status_counts" not in (run.stats or {}):
        raise BatchdError(
            f"Run {run.run_id} ended without results ({run.outcome}): {run.error}.",
            "Submit the file again to run it anew (answers already paid for come from the cache).",
        )
    if run.state != RUN_DONE or not out.exists("results.parquet"):
        raise BatchdError(
            f"Run {run.run_id} has no results yet (state {run.state}).",
            f"Wait for it (`batchd status {run.run_id}`) or resume it with the "
            "same `batchd submit`.",
        )
    return out


def _read_results(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(
        path,
        columns=[
            "line_no",
            "custom_id",
            "status",
            "cache",
            "model_used",
            "finish_reason",
            "output_text",
            "error_type",
            "error_message",
            "cost_usd",
        ],
    )


def results(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    fmt: Annotated[
        ResultsFormat, typer.Option("--format", help="table, jsonl or path.")
    ] = ResultsFormat.table,
    limit: Annotated[
        int | None, typer.Option(metavar="N", help="Show the first N rows. [default: all]")
    ] = None,
) -> None:
    """Read a finished run's result rows (all of them unless --limit is given).

    jsonl: one JSON object per row, in input order; path: where results.parquet is.
    """
    if fmt == ResultsFormat.path:
        out.print(_finished_output(run_id).uri("results.parquet"))
        return
    with run_output(run_id, "results.parquet") as (_, path):
        table = _read_results(path)
    total = table.num_rows
    if limit is not None and limit >= 0:
        table = table.slice(0, limit)
    if fmt == ResultsFormat.jsonl:
        for batch in table.to_batches(max_chunksize=10_000):
            for row in batch.to_pylist():
                sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
        return
    t = Table("line", "custom_id", "status", "cache", "answer / error", "cost $")
    for r in table.to_pylist():
        text = r["output_text"] if r["status"] == "succeeded" else r["error_message"]
        t.add_row(
            str(r["line_no"]),
            r["custom_id"],
            r["status"],
            r["cache"],
            (text or "")[:60],
            f"{r['cost_usd']:.6f}",
        )
    out.print(t)
    more = "" if table.num_rows == total else " (--limit N shows more; --format jsonl for all)"
    err.print(f"{table.num_rows} of {total} rows{more}")


def cancel(run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")]) -> None:
    """Cancel a run: its vendor batches are cancelled, unfinished lines end as 'canceled'.

    Lines already done are kept (and billed by the vendor). Waits until the run is finalized.
    """
    svc = open_services(cli_settings())
    try:
        run = request_cancel(svc, run_id)
        if run.state == RUN_DONE:
            err.print(f"Run {run_id} already finished ({run.outcome}); nothing to cancel.")
            raise typer.Exit(exit_code(run))
        if svc.distributed:  # the coordinators act on it now, not at their next poll
            from batchd.distributed.coordinator import kick

            asyncio.run(kick(svc.settings.redis_url, svc, run_id))
        chunks = svc.store.chunks(run_id)
        if run.state != RUN_INGESTING and all(c.state == CHUNK_COLLECTED for c in chunks):
            err.print(f"Run {run_id} has nothing left to cancel: all its work is done.")
        else:
            err.print(f"Cancel requested for {run_id}; waiting for its batches to stop.")
        if not svc.distributed:  # embedded: finish it here unless a submit is driving it
            with driver_lock(svc.home, run_id) as mine:
                if mine:
                    run = asyncio.run(drive_in_process(svc, run_id, Progress(err, quiet=True)))
        while run.state != RUN_DONE:  # another process drives it: wait for it to finish
            time.sleep(min(svc.settings.poll_interval_s, 2.0))
            run = get_run(svc, run_id)
        print_summary(svc, run)
        code = exit_code(run)
    finally:
        svc.close()
    raise typer.Exit(code)
