"""Drive a run from the command line: in this process (embedded) or by watching the
coordinators (distributed), with the progress display."""

from __future__ import annotations

import asyncio
import time

import typer

from batchd.cli.common import DISTRIBUTED_REFRESH_S, EXIT_INTERRUPTED, err, get_run, print_summary
from batchd.cli.progress import Progress
from batchd.config.settings import Settings
from batchd.errors import BatchdError
from batchd.run.identity import driver_lock
from batchd.run.pipeline import drive
from batchd.run.services import Services, open_services
from batchd.state.base import RUN_DONE, Run


def run_embedded(svc: Services, run: Run, quiet: bool) -> Run:
    with driver_lock(svc.home, run.run_id) as mine:
        if not mine:
            raise BatchdError(
                f"Run {run.run_id} is being processed by another batchd process.",
                f"Follow it with `batchd status {run.run_id}`, or stop that process first.",
            )
        try:
            with Progress(err, quiet=quiet) as progress:
                return asyncio.run(drive_in_process(svc, run.run_id, progress))
        except KeyboardInterrupt:
            err.print(
                f"Interrupted. Run {run.run_id} is kept: run the same "
                "`batchd submit` to resume it (nothing already sent is sent again)."
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None


def wait_distributed(svc: Services, run: Run, quiet: bool) -> Run:
    """The coordinators do the work; show progress until the run is done."""
    from batchd.state.redis_store import RedisStore

    store = svc.store
    if isinstance(store, RedisStore) and not store.coordinators_alive():
        err.print(
            "[yellow]No batchd coordinator is running:[/] the run waits in Redis until "
            "one starts (`arq workers.coordinator.WorkerSettings`, see README)."
        )
    try:
        with Progress(err, quiet=quiet) as progress:
            while True:
                current = get_run(svc, run.run_id)
                progress.update(current, svc.store.chunks(run.run_id), None)
                if current.state == RUN_DONE:
                    return current
                if current.blocked:  # a coordinator's preflight refused: nothing was sent
                    raise BatchdError(
                        f"Run {run.run_id} cannot go on: {current.blocked}",
                        "Fix it where the coordinators run (they retry on their own), or "
                        f"`batchd cancel {run.run_id}`; nothing was sent.",
                    )
                time.sleep(DISTRIBUTED_REFRESH_S)
    except KeyboardInterrupt:
        err.print(
            f"Stopped watching. Run {run.run_id} goes on in the coordinators: follow it "
            f"with `batchd status {run.run_id}`."
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


async def drive_in_process(svc: Services, run_id: str, progress: Progress) -> Run:
    try:
        return await drive(svc, run_id, progress.update)
    finally:
        await svc.aclose()


def drive_here(settings: Settings, run: Run) -> Run:
    """Embedded: drive one run to its end in this process (quietly) and print its summary.

    Each run gets its own services: driving one closes its vendor clients at the end.
    """
    err.print(f"Started run {run.run_id} ({run.source}).")
    svc = open_services(settings)
    try:
        run = run_embedded(svc, run, quiet=True)
        print_summary(svc, run)
    finally:
        svc.close()
    return run
