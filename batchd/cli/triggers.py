"""Runs started by something other than a person: `batchd watch` (S3 drop folder) and
`batchd jobs` (nightly job specs)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from batchd.cli.common import (
    EXIT_OK,
    cli_settings,
    err,
    exit_code,
    out,
)
from batchd.cli.driving import drive_here
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.run.identity import driver_lock, parse_deadline, run_options
from batchd.run.services import Services, open_services
from batchd.state.base import RUN_DONE, Run
from batchd.triggers.drop_folder import fail_drop, finish_drop, owner_id, unfinished, watch_once
from batchd.triggers.nightly import fire, get_spec, last_fired, load_specs, next_time, tick

jobs_app = typer.Typer(help="Scheduled (nightly) runs from job specs in jobs/*.toml.")


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

    settings = cli_settings(output=output)
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
                from batchd.distributed.coordinator import kick

                for run in runs:
                    asyncio.run(kick(settings.redis_url, svc, run.run_id))
                    out.print(run.run_id)
            if once:
                break
            time.sleep(interval_s or settings.s3.watch_interval_s)
    finally:
        svc.close()


def _finish_here(svc: Services, settings: Settings, run: Run) -> None:

    if run.state == RUN_DONE:
        finish_drop(svc, run)
        return
    try:
        run = drive_here(settings, run)
    except BatchdError as exc:  # the user must act (e.g. API key): the file goes to failed/
        with driver_lock(svc.home, run.run_id) as free:
            pass
        if not free:  # another watcher drives it (a resume raced us): leave it to that one
            return
        err.print(f"[red]error:[/] run {run.run_id}: {exc}")
        fail_drop(svc, run.options["drop"], run.source, str(exc))
        return
    finish_drop(svc, run)  # finalize did it already, unless that move failed


@jobs_app.command("list")
def jobs_list() -> None:
    """Show the job specs with their next and last scheduled run."""

    settings = cli_settings()
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

    settings = cli_settings()
    spec = get_spec(settings.jobs_dir, name)
    svc = open_services(settings)
    code = EXIT_OK
    try:
        now = time.time()
        for run in fire(svc, spec, now, now):
            if svc.distributed:
                from batchd.distributed.coordinator import kick

                asyncio.run(kick(settings.redis_url, svc, run.run_id))
                out.print(run.run_id)
            else:
                code = max(code, exit_code(drive_here(settings, run)))
    finally:
        svc.close()
    raise typer.Exit(code)


@jobs_app.command("tick")
def jobs_tick() -> None:
    """Fire the specs that are due now (for a system cron in embedded mode; the
    coordinators do this themselves in distributed mode). Says what it fired, or that
    nothing was due and when the next spec is."""
    settings = cli_settings()
    specs = load_specs(settings.jobs_dir)
    svc = open_services(settings)
    try:
        now = time.time()
        fired = tick(svc, specs, now, owner_id())
        for run in fired:
            if svc.distributed:
                from batchd.distributed.coordinator import kick

                asyncio.run(kick(settings.redis_url, svc, run.run_id))
                out.print(run.run_id)
            else:
                drive_here(settings, run)
        if not fired:
            enabled = [s for s in specs if s.enabled]
            if not enabled:
                err.print(f"No enabled job specs in {settings.jobs_dir}/; nothing to fire.")
            else:
                nxt = min(enabled, key=lambda s: next_time(s, now))
                when = datetime.fromtimestamp(next_time(nxt, now), nxt.tz)
                err.print(
                    f"Nothing due. Next: {nxt.name} at {when:%Y-%m-%d %H:%M %Z} "
                    f"({len(enabled)} enabled specs)."
                )
        else:
            err.print(f"Fired {len(fired)} runs.")
    finally:
        svc.close()
