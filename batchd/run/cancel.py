"""Cancel: ask for it, and how soon a driver acts on it."""

from __future__ import annotations

import asyncio
import time

from batchd.errors import BatchdError
from batchd.run.services import Services
from batchd.state.base import RUN_DONE, Run

CANCEL_CHECK_S = 1.0  # how soon a driver sleeping between polls notices a cancel
CANCEL_POLL_S = 1.0  # poll interval while a cancel is under way (vendors answer in seconds)


async def until_next_round(svc: Services, run: Run) -> None:
    """Sleep one poll interval, waking early when a cancel is requested meanwhile."""
    if run.cancel_requested:
        await asyncio.sleep(min(svc.settings.poll_interval_s, CANCEL_POLL_S))
        return
    end = time.monotonic() + svc.settings.poll_interval_s
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(left, CANCEL_CHECK_S))
        current = svc.store.get_run(run.run_id)
        if current is not None and current.cancel_requested:
            return


def request_cancel(svc: Services, run_id: str) -> Run:
    run = svc.store.get_run(run_id)
    if run is None:
        raise BatchdError(f"No run {run_id}.", "List runs with `batchd status`.")
    if run.state == RUN_DONE:
        return run
    return svc.store.update_run(run_id, cancel_requested=True)
