"""Follow, read, explain and stop runs: `batchd status`, `results`, `report`, `cancel`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from batchd.cli.common import (
    EXIT_OK,
    ResultsFormat,
    cli_settings,
    err,
    exit_code,
    get_run,
    out,
    print_summary,
)
from batchd.cli.driving import drive_in_process
from batchd.cli.plan_view import print_planned_vs_actual, print_tiers
from batchd.cli.progress import Progress, snapshot
from batchd.errors import BatchdError
from batchd.run.identity import driver_lock
from batchd.run.pipeline import request_cancel
from batchd.run.services import open_services
from batchd.state.base import RUN_DONE


def status(
    run_id: Annotated[str | None, typer.Argument(help="Run id; none lists runs.")] = None,
) -> None:
    """Show a run's state and counts (or list recent runs)."""
    svc = open_services(cli_settings())
    try:
        if run_id is None:
            table = Table("run", "state", "outcome", "source", "created (UTC)")
            for r in svc.store.list_runs():
                table.add_row(
                    r.run_id,
                    r.state,
                    r.outcome or "-",
                    r.source,
                    datetime.utcfromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M"),
                )
            out.print(table)
            raise typer.Exit(EXIT_OK)
        run = get_run(svc, run_id)
        snap = snapshot(run, svc.store.chunks(run_id), None)
        for k, v in snap.items():
            out.print(f"{k:>22}: {v}")
        if run.state == RUN_DONE:
            print_summary(svc, run)
        code = exit_code(run)
    finally:
        svc.close()
    raise typer.Exit(code)


@contextmanager
def _run_output(run_id: str, name: str) -> Iterator[tuple[str, Path]]:
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
    out = svc.output(run.output, run.run_id)
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
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[
        ResultsFormat, typer.Option("--format", help="table, jsonl or path.")
    ] = ResultsFormat.table,
    limit: Annotated[int, typer.Option(help="Rows to show (0 = all).")] = 20,
) -> None:
    """Read a finished run's result rows."""

    if fmt == ResultsFormat.path:
        out.print(_finished_output(run_id).uri("results.parquet"))
        return
    with _run_output(run_id, "results.parquet") as (_, path):
        table = _read_results(path)
    if limit:
        table = table.slice(0, limit)
    rows = table.to_pylist()
    if fmt == ResultsFormat.jsonl:
        for row in rows:
            sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
        return
    t = Table("line", "custom_id", "status", "cache", "answer / error", "cost $")
    for r in rows:
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


def report(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cost and savings of a finished run, by backend and model."""
    import pyarrow.parquet as pq

    svc = open_services(cli_settings())
    try:
        run = get_run(svc, run_id)
    finally:
        svc.close()
    with _run_output(run_id, "costs.parquet") as (_, path):
        rows = pq.read_table(path).to_pylist()
    t = Table(
        "backend",
        "model",
        "rows",
        "ok",
        "cache hits",
        "in-run",
        "in tok",
        "prompt-cached",
        "out tok",
        "cost $",
        "list $",
        "saved $",
        "of it by prompt cache $",
    )
    for r in rows:
        t.add_row(
            r["backend"],
            r["model"],
            str(r["requests"]),
            str(r["succeeded"]),
            str(r["cache_hits"]),
            str(r["in_run_hits"]),
            f"{r['input_tokens']:,}",
            f"{r['cached_input_tokens']:,} read / {r['cache_write_tokens']:,} written",
            f"{r['output_tokens']:,}",
            f"{r['cost_usd']:.4f}",
            f"{r['baseline_cost_usd']:.4f}",
            f"{r['savings_usd']:.4f}",
            f"{r['prompt_cache_savings_usd']:.4f}",
        )
    out.print(t)
    cost = sum(r["cost_usd"] for r in rows)
    base = sum(r["baseline_cost_usd"] for r in rows)
    pct = 100 * (base - cost) / base if base else 0.0
    out.print(
        f"total ${cost:,.4f} against ${base:,.4f} at realtime list price: "
        f"saved ${base - cost:,.4f} ({pct:.0f}%) — price book "
        f"{rows[0]['price_book_version'] if rows else '-'}"
    )
    prompt = sum(r["prompt_cache_savings_usd"] for r in rows)
    if any(r["cached_input_tokens"] or r["cache_write_tokens"] for r in rows):
        out.print(
            f"prompt cache: saved ${prompt:,.4f} of that (cache reads at 0.1x input, "
            "net of the cache-write premium)"
        )
    print_planned_vs_actual(out, run.stats or {}, rows)
    print_tiers(out, run.stats or {})


def cancel(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cancel a run: its vendor batches are cancelled, unfinished lines end as 'canceled'.

    Lines already done are kept (and billed by the vendor). Waits until the run is finalized.
    """
    svc = open_services(cli_settings())
    try:
        run = request_cancel(svc, run_id)
        if run.state == RUN_DONE:
            err.print(f"Run {run_id} already finished ({run.outcome}); nothing to cancel.")
            raise typer.Exit(exit_code(run))
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
