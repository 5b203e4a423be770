"""Ending what cannot finish normally, so no run is stuck for good.

- `end_run`: a run ends (`done`) without results: canceled before its ingest finished, or
  `failed` when its finalize gave up; the reason is kept in `Run.error`.
- `retried_step` / `run_step_failed`: a whole-run step (finalize) that raised is retried
  with backoff (`step_retry_base_s * 2**(n-1)`); after `max_step_failures` the run ends
  `failed`; a canceled run whose step failed ends canceled without running it again.
- `abandon_chunk`: a canceled run's chunk whose step fails is not tried again: its vendor
  batch is cancelled if it can be, and its lines end `canceled`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from batchd.errors import BatchdError
from batchd.run import follow_ups
from batchd.run.dispatch import end_unsent
from batchd.run.services import Services
from batchd.state.base import CHUNK_COLLECTED, CHUNK_SUBMITTED, RUN_DONE, Chunk, Run

log = logging.getLogger("batchd.endings")

RUN_CANCELED = "canceled"
RUN_FAILED = "failed"  # the run ended without its results (the reason: Run.error)


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, BatchdError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def end_run(svc: Services, run: Run, outcome: str, reason: str) -> Run:
    """The run is done without results; its follow-ups still fire (a dropped file moves on)."""
    done = svc.store.update_run(
        run.run_id, state=RUN_DONE, outcome=outcome, error=reason, blocked="", retry_at=0.0
    )
    try:
        follow_ups.fire(svc, done)
    except Exception as exc:  # the run is over either way; say why the follow-up did not run
        log.error("run %s: follow-up failed: %s", run.run_id, reason_of(exc))
    return done


def run_step_failed(svc: Services, run: Run, step: str, exc: BaseException) -> Run:
    """Count a failed attempt of `step`; back off, or end the run with the reason."""
    failures = run.failures + 1
    limit = svc.settings.max_step_failures
    reason = reason_of(exc)
    log.warning("run %s: %s failed (%d/%d): %s", run.run_id, step, failures, limit, reason)
    log.debug("run %s: %s failed", run.run_id, step, exc_info=exc)
    if run.cancel_requested:
        return end_run(svc, run, RUN_CANCELED, f"canceled; its {step} failed: {reason}")
    if failures < limit:
        cfg = svc.settings
        delay = min(cfg.step_retry_base_s * 2 ** (failures - 1), cfg.step_retry_max_s)
        return svc.store.update_run(
            run.run_id,
            failures=failures,
            retry_at=time.time() + delay,
            error=f"{step} failed ({failures}/{limit}), retried in {delay:g} s: {reason}",
        )
    return end_run(
        svc, run, RUN_FAILED, f"{step} gave up after {failures} failed attempts: {reason}"
    )


def retried_step(svc: Services, run: Run, step: str, fn: Callable[[Services, Run], Run]) -> Run:
    """Run a whole-run step (finalize) as a retried one: a failure backs off, and after
    `max_step_failures` the run ends `failed` with the reason. A canceled run whose step
    failed before is not run again: it ends canceled."""
    if run.cancel_requested and run.failures:
        return end_run(svc, run, RUN_CANCELED, f"canceled; its {step} had failed: {run.error}")
    if run.retry_at > time.time():
        return run
    try:
        done = fn(svc, run)
    except Exception as exc:
        return run_step_failed(svc, run, step, exc)
    if done.failures:
        done = svc.store.update_run(run.run_id, failures=0, retry_at=0.0, error="")
    return done


async def abandon_chunk(svc: Services, run: Run, chunk: Chunk, reason: str) -> None:
    """A canceled run's chunk that cannot go on: best-effort vendor cancel, lines canceled."""
    log.warning("run %s: chunk %s ends canceled: %s", run.run_id, chunk.chunk_id, reason)
    if chunk.state == CHUNK_SUBMITTED and chunk.vendor_batch_id and chunk.cancel_reason is None:
        with contextlib.suppress(Exception):  # best effort: stop paying for lines we end
            await svc.backends[chunk.backend].cancel(chunk)
    message = f"run canceled; this line's chunk could not go on: {reason}"
    try:
        await end_unsent(svc, run, chunk, (chunk.state,), message)
    except Exception:  # its chunk file is gone or unreadable: end it with no outcome part
        svc.store.transition(
            chunk.chunk_id,
            (chunk.state,),
            state=CHUNK_COLLECTED,
            error=message,
            counts={"final": 0, "succeeded": 0},
        )
