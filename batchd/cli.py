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

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from batchd.errors import BatchdError
from batchd.pipeline import RUN_CANCELED, RUN_SUCCEEDED, drive, plan_file, request_cancel
from batchd.plan_view import plan_document, print_plan, print_planned_vs_actual
from batchd.progress import Progress, snapshot
from batchd.runs import driver_lock, parse_deadline, run_options, stage_input, start_run
from batchd.s3 import join
from batchd.services import Services, open_services
from batchd.settings import Settings, load_settings
from batchd.store import RUN_DONE, Run

EXIT_OK, EXIT_ERROR, EXIT_FAILED_LINES, EXIT_CANCELED, EXIT_INTERRUPTED = 0, 1, 3, 4, 130
DISTRIBUTED_REFRESH_S = 0.5

app = typer.Typer(
    help="batchd: run files of LLM requests at the lowest cost before their deadline.\n\n"
    "Repeats are answered from a cache, the rest go to vendor Batch APIs (50% off), and every "
    "input line ends as one row, with its cost, in results.parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output is not cut to 80 columns: run ids and paths must stay whole.
PIPE_WIDTH = 200
out = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)


class Export(StrEnum):
    openai_jsonl = "openai-jsonl"


class ResultsFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    path = "path"


def _settings(**cli: Any) -> Settings:
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


def _exit_code(run: Run) -> int:
    if run.state != RUN_DONE:
        return EXIT_OK
    if run.outcome == RUN_CANCELED:
        return EXIT_CANCELED
    return EXIT_OK if run.outcome == RUN_SUCCEEDED else EXIT_FAILED_LINES


def _summary(svc: Services, run: Run) -> None:
    st = run.stats or {}
    counts = st.get("status_counts", {})
    cost = st.get("cost_usd", 0.0)
    base = st.get("baseline_cost_usd", 0.0)
    out.print(f"[bold]run {run.run_id}[/] {run.outcome or run.state}")
    out.print("  rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    out.print(f"  cost ${cost:,.4f}  (realtime list price ${base:,.4f}, saved ${base - cost:,.4f})")
    out.print(f"  results: {join(run.output, run.run_id, 'results.parquet')}")
    invalid = (st.get("ingest") or {}).get("invalid_by_type") or {}
    if invalid:
        out.print(
            "  invalid lines by reason: "
            + ", ".join(f"{k} {v}" for k, v in sorted(invalid.items()))
        )
        out.print("  see the error_message column of the invalid rows for each line's reason")


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="JSONL (or .jsonl.gz) file of requests.")],
    output: Annotated[
        str | None,
        typer.Option(
            help="Directory for <run_id>/results.parquet and costs.parquet. "
            "[default: ./batchd-results]"
        ),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="When every line must be done: 36h, 90m, 2d or 2026-11-25T06:00Z. "
            "Lines not done by then end as 'expired'. [default: 72h]"
        ),
    ] = None,
    within: Annotated[
        str | None, typer.Option(help="The deadline as a duration from now: 12h, 90m, 2d.")
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Neither read nor fill the result cache for this run."),
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            help="Tenant for lines without metadata.tenant (cache answers never cross tenants).",
        ),
    ] = None,
    no_prompt_cache: Annotated[
        bool,
        typer.Option(
            "--no-prompt-cache",
            help="Do not mark shared prompt prefixes for the vendor's prompt cache (Claude).",
        ),
    ] = False,
    export: Annotated[
        Export | None,
        typer.Option(help="Also write results.openai.jsonl in the OpenAI batch output format."),
    ] = None,
    poll_interval_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds between vendor polls (env BATCHD_POLL_INTERVAL_S). [default: 30]"
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help="Enqueue and print the run id (distributed mode only)."),
    ] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Run self-hosted vLLM work now, ignoring [backends.vllm] windows (embedded mode).",
        ),
    ] = False,
) -> None:
    """Run a file of LLM requests and wait for it, with live progress.

    Submitting the same file again while its run is unfinished resumes that run (nothing is
    sent twice); after it finished, a new run answers every line it can from the cache.
    Needs OPENAI_API_KEY for OpenAI models (OPENAI_BASE_URL selects another endpoint).
    """
    settings = _settings(
        poll_interval_s=poll_interval_s,
        output=output,
        backends={"vllm": {"windows": []}} if now else None,
    )
    if now and settings.redis_url:
        raise BatchdError(
            "--now runs vLLM work in this process, which distributed mode does not do.",
            "Unset BATCHD_REDIS_URL to run embedded, or widen the gpu workers' windows.",
        )
    if no_wait and not settings.redis_url:
        raise BatchdError(
            "--no-wait needs distributed mode.",
            "Set BATCHD_REDIS_URL to a Redis the batchd coordinators use, or drop "
            "--no-wait to run here and wait.",
        )
    options = run_options(
        settings,
        no_cache=no_cache,
        tenant=tenant,
        deadline=deadline or within,
        export=export.value if export else "",
        no_prompt_cache=no_prompt_cache,
    )
    svc = open_services(settings)
    try:
        run, resumed = start_run(
            svc,
            file,
            settings.output,
            options,
            run_deadline(deadline, within, time.time()),
            stage=stage_input(svc) if svc.distributed else None,
        )
        if resumed:
            err.print(f"Resuming unfinished run {run.run_id} (same file and options).")
        else:
            err.print(f"Started run {run.run_id}.")
        if svc.distributed:
            from batchd.coordinator import kick

            asyncio.run(kick(settings.redis_url, svc, run.run_id))
            if no_wait:
                out.print(run.run_id)
                raise typer.Exit(EXIT_OK)
            run = _wait_distributed(svc, run, quiet)
        else:
            run = _run_embedded(svc, run, quiet)
        _summary(svc, run)
        code = _exit_code(run)
    finally:
        svc.close()
    raise typer.Exit(code)


def _run_embedded(svc: Services, run: Run, quiet: bool) -> Run:
    with driver_lock(svc.home, run.run_id) as mine:
        if not mine:
            raise BatchdError(
                f"Run {run.run_id} is being processed by another batchd process.",
                f"Follow it with `batchd status {run.run_id}`, or stop that process first.",
            )
        try:
            with Progress(err, quiet=quiet) as progress:
                return asyncio.run(_drive(svc, run.run_id, progress))
        except KeyboardInterrupt:
            err.print(
                f"Interrupted. Run {run.run_id} is kept: run the same "
                "`batchd submit` to resume it (nothing already sent is sent again)."
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _wait_distributed(svc: Services, run: Run, quiet: bool) -> Run:
    """The coordinators do the work; show progress until the run is done."""
    from batchd.redis_store import RedisStore

    store = svc.store
    if isinstance(store, RedisStore) and not store.coordinators_alive():
        err.print(
            "[yellow]No batchd coordinator is running:[/] the run waits in Redis until "
            "one starts (`arq workers.coordinator.WorkerSettings`, see README)."
        )
    try:
        with Progress(err, quiet=quiet) as progress:
            while True:
                current = _get_run(svc, run.run_id)
                progress.update(current, svc.store.chunks(run.run_id), None)
                if current.state == RUN_DONE:
                    return current
                time.sleep(DISTRIBUTED_REFRESH_S)
    except KeyboardInterrupt:
        err.print(
            f"Stopped watching. Run {run.run_id} goes on in the coordinators: follow it "
            f"with `batchd status {run.run_id}`."
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


async def _drive(svc: Services, run_id: str, progress: Progress) -> Run:
    try:
        return await drive(svc, run_id, progress.update)
    finally:
        await svc.aclose()


@app.command()
def plan(
    file: Annotated[str, typer.Argument(help="JSONL (or .jsonl.gz) file of requests.")],
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore the result cache.")] = False,
    tenant: Annotated[
        str | None, typer.Option(help="Tenant for lines without metadata.tenant.")
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="When every line must be done: 2026-11-25T06:00Z (or 36h). [default: 72h]"
        ),
    ] = None,
    within: Annotated[
        str | None, typer.Option(help="Deadline as a duration from now: 12h, 90m, 2d.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for machines.")
    ] = False,
    now: Annotated[
        str | None, typer.Option(hidden=True, help="Plan as if it were this time.")
    ] = None,
) -> None:
    """Dry run: parse, dedup, cache lookup, where each request runs, its cost. Sends nothing.

    Needs no API key. Per target: requests, estimated tokens and cost, the realtime list price
    (baseline), savings and GPU-seconds; requests no target can finish before their deadline
    are counted apart ('max' assumes every reply uses its full max_tokens).
    """
    settings = _settings()
    now_s = parse_deadline(now, time.time()) or time.time()
    deadline_at = run_deadline(deadline, within, now_s)
    svc = open_services(settings)
    try:
        t0 = time.perf_counter()
        report = plan_file(
            svc, file, {"no_cache": no_cache, "tenant": tenant}, deadline_at=deadline_at, now=now_s
        )
        elapsed = time.perf_counter() - t0
    finally:
        svc.close()
    if as_json:
        sys.stdout.write(msgspec.json.encode(plan_document(file, report)).decode() + "\n")
        return
    print_plan(out, file, report, elapsed)


def _get_run(svc: Services, run_id: str) -> Run:
    run = svc.store.get_run(run_id)
    if run is None:
        raise BatchdError(
            f"No run {run_id!r} in {svc.home}.",
            "List runs with `batchd status` (and check BATCHD_HOME).",
        )
    return run


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="Run id; none lists runs.")] = None,
) -> None:
    """Show a run's state and counts (or list recent runs)."""
    svc = open_services(_settings())
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
        run = _get_run(svc, run_id)
        snap = snapshot(run, svc.store.chunks(run_id), None)
        for k, v in snap.items():
            out.print(f"{k:>22}: {v}")
        if run.state == RUN_DONE:
            _summary(svc, run)
        code = _exit_code(run)
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
    svc = open_services(_settings())
    try:
        run = _get_run(svc, run_id)
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


@app.command()
def results(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    fmt: Annotated[
        ResultsFormat, typer.Option("--format", help="table, jsonl or path.")
    ] = ResultsFormat.table,
    limit: Annotated[int, typer.Option(help="Rows to show (0 = all).")] = 20,
) -> None:
    """Read a finished run's result rows."""
    import msgspec

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


@app.command()
def report(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cost and savings of a finished run, by backend and model."""
    import pyarrow.parquet as pq

    svc = open_services(_settings())
    try:
        run = _get_run(svc, run_id)
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


@app.command()
def cancel(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cancel a run: its vendor batches are cancelled, unfinished lines end as 'canceled'.

    Lines already done are kept (and billed by the vendor). Waits until the run is finalized.
    """
    svc = open_services(_settings())
    try:
        run = request_cancel(svc, run_id)
        if run.state == RUN_DONE:
            err.print(f"Run {run_id} already finished ({run.outcome}); nothing to cancel.")
            raise typer.Exit(_exit_code(run))
        err.print(f"Cancel requested for {run_id}; waiting for its batches to stop.")
        if not svc.distributed:  # embedded: finish it here unless a submit is driving it
            with driver_lock(svc.home, run_id) as mine:
                if mine:
                    run = asyncio.run(_drive(svc, run_id, Progress(err, quiet=True)))
        while run.state != RUN_DONE:  # another process drives it: wait for it to finish
            time.sleep(min(svc.settings.poll_interval_s, 2.0))
            run = _get_run(svc, run_id)
        _summary(svc, run)
        code = _exit_code(run)
    finally:
        svc.close()
    raise typer.Exit(code)


def _drive_here(settings: Settings, run: Run) -> Run:
    """Embedded: drive one run to its end in this process (quietly) and print its summary.

    Each run gets its own services: driving one closes its vendor clients at the end.
    """
    err.print(f"Started run {run.run_id} ({run.source}).")
    svc = open_services(settings)
    try:
        run = _run_embedded(svc, run, quiet=True)
        _summary(svc, run)
    finally:
        svc.close()
    return run


@app.command()
def watch(
    inbox: Annotated[str, typer.Argument(help="The drop folder: s3://bucket/inbox/.")],
    output: Annotated[
        str | None,
        typer.Option(help="Where runs of dropped files write results (local or s3://)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Scan once, run what was found, exit.")
    ] = False,
    interval_s: Annotated[
        float | None, typer.Option(help="Seconds between scans. [default: s3.watch_interval_s]")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant for lines without one.")] = None,
    deadline: Annotated[
        str | None, typer.Option(help="Deadline of each dropped file's run (36h, 90m, 2d).")
    ] = None,
) -> None:
    """Run every file dropped under an S3 prefix, once, and move it to done/ or failed/.

    Each file is claimed exactly once, however many watchers (or coordinators) scan the
    same inbox; it moves to <inbox>/processing/ while it runs, then to <inbox>/done/ (or
    failed/: not JSONL, too big, odd name) with <name>.report.json beside it. In
    distributed mode the coordinators run the files; this command only claims and enqueues.
    """
    from batchd.triggers import unfinished, watch_once

    settings = _settings(output=output)
    parse_deadline(deadline, time.time())  # a bad deadline fails now, not per file
    options = run_options(settings, tenant=tenant, deadline=deadline)
    svc = open_services(settings)
    try:
        on_run = None if svc.distributed else (lambda run: _finish_here(svc, settings, run))
        if on_run is not None:  # files a killed watcher left in processing/
            for run in unfinished(svc, inbox):
                with driver_lock(svc.home, run.run_id) as free:
                    pass
                if free:
                    err.print(f"Resuming run {run.run_id} of {run.source}.")
                    on_run(run)
        while True:
            runs = watch_once(svc, inbox, settings.output, options, on_run)
            if svc.distributed and runs:
                from batchd.coordinator import kick

                for run in runs:
                    asyncio.run(kick(settings.redis_url, svc, run.run_id))
                    out.print(run.run_id)
            if once:
                break
            time.sleep(interval_s or settings.s3.watch_interval_s)
    finally:
        svc.close()


def _finish_here(svc: Services, settings: Settings, run: Run) -> None:
    from batchd.triggers import fail_drop, finish_drop

    if run.state == RUN_DONE:
        finish_drop(svc, run)
        return
    try:
        run = _drive_here(settings, run)
    except BatchdError as exc:  # the user must act (e.g. API key): the file goes to failed/
        with driver_lock(svc.home, run.run_id) as free:
            pass
        if not free:  # another watcher drives it (a resume raced us): leave it to that one
            return
        err.print(f"[red]error:[/] run {run.run_id}: {exc}")
        fail_drop(svc, run.options["drop"], run.source, str(exc))
        return
    finish_drop(svc, run)  # finalize did it already, unless that move failed


jobs_app = typer.Typer(help="Scheduled (nightly) runs from job specs in jobs/*.toml.")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list() -> None:
    """Show the job specs with their next and last scheduled run."""
    from batchd.jobspecs import last_fired, load_specs, next_time

    settings = _settings()
    specs = load_specs(settings.jobs_dir)
    svc = open_services(settings)
    try:
        now = time.time()
        t = Table("name", "schedule", "source", "output", "next run", "last run")
        for spec in specs:
            nxt = datetime.fromtimestamp(next_time(spec, now), spec.tz)
            last = last_fired(svc, spec)
            t.add_row(
                spec.name + ("" if spec.enabled else " (disabled)"),
                f"{spec.schedule} ({spec.timezone})",
                spec.source,
                spec.output or settings.output,
                nxt.strftime("%Y-%m-%d %H:%M %Z"),
                f"{last[0]} ({', '.join(last[1].get('runs', [])) or 'fired'})" if last else "-",
            )
        out.print(t)
        if not specs:
            err.print(f"No job specs in {settings.jobs_dir}/ (see README, 'Nightly jobs').")
    finally:
        svc.close()


@jobs_app.command("run")
def jobs_run(name: Annotated[str, typer.Argument(help="The spec's name.")]) -> None:
    """Run one job spec now (outside its schedule) and wait for it (embedded mode)."""
    from batchd.jobspecs import fire, get_spec

    settings = _settings()
    spec = get_spec(settings.jobs_dir, name)
    svc = open_services(settings)
    code = EXIT_OK
    try:
        now = time.time()
        for run in fire(svc, spec, now, now):
            if svc.distributed:
                from batchd.coordinator import kick

                asyncio.run(kick(settings.redis_url, svc, run.run_id))
                out.print(run.run_id)
            else:
                code = max(code, _exit_code(_drive_here(settings, run)))
    finally:
        svc.close()
    raise typer.Exit(code)


@jobs_app.command("tick")
def jobs_tick() -> None:
    """Fire the specs that are due now (for a system cron in embedded mode; the
    coordinators do this themselves in distributed mode)."""
    from batchd.jobspecs import load_specs, tick
    from batchd.triggers import owner_id

    settings = _settings()
    specs = load_specs(settings.jobs_dir)
    svc = open_services(settings)
    try:
        for run in tick(svc, specs, time.time(), owner_id()):
            if svc.distributed:
                from batchd.coordinator import kick

                asyncio.run(kick(settings.redis_url, svc, run.run_id))
                out.print(run.run_id)
            else:
                _drive_here(settings, run)
    finally:
        svc.close()


def main() -> None:
    debug = os.environ.get("BATCHD_DEBUG", "") not in ("", "0", "false")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except BatchdError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/] {exc.message}" + (f" {exc.hint}" if exc.hint else ""))
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        err.print("Interrupted. The run is kept: run the same `batchd submit` to resume it.")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
