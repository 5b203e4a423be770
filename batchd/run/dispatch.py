"""The chunk state machine: pending -> creating -> submitted -> ended -> collected.

Each step is a small function that changes the chunk with a compare-and-set, so
repeating a step after a crash is harmless. Exactly-once billing: the intent
(`creating`) is recorded before the vendor batch is created, and a chunk found
in `creating` is first reconciled with the vendor's batch list, adopting only a batch
proven to be its own. In distributed mode
every write carries the run lease's fence and the lease is checked immediately before
the vendor create (`svc.store.check_fence`), so a coordinator that lost its lease
neither creates nor records anything.

Every step ends: a step that fails, transiently or not, is retried with backoff and
after `max_step_failures` its chunk's lines end `failed` with the reason; a chunk not
yet sent when its deadline passes ends its lines `expired` (`end_past_deadline`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from batchd.backends.base import (
    ChunkRejected,
    OwnershipUnproven,
    TransientBackendError,
    VendorRef,
)
from batchd.intake.decode import key_of
from batchd.outcome import CANCELED, EXPIRED, FAILED, Outcome
from batchd.run import quota
from batchd.run.collect import handle_ended
from batchd.run.services import Services
from batchd.state.base import (
    CHUNK_COLLECTED,
    CHUNK_CREATING,
    CHUNK_ENDED,
    CHUNK_PENDING,
    CHUNK_SUBMITTED,
    Chunk,
    Run,
)
from batchd.storage.chunk_outcomes import chunk_lines, write_outcomes

log = logging.getLogger("batchd.dispatch")


def past_deadline(chunk: Chunk, now: float | None = None) -> bool:
    return (time.time() if now is None else now) >= chunk.deadline_at


async def end_past_deadline(svc: Services, run: Run, chunk: Chunk) -> bool:
    """A chunk not yet sent whose deadline has passed: end its lines `expired`. True if it did.

    The one place the deadline ends unsent lines (a deadline guard acting before the
    deadline hooks in here). A chunk in `creating` is reconciled first: a batch the
    vendor has is recorded (its lines then end by the deadline cancel, finished work
    kept), not abandoned.
    """
    if chunk.state not in (CHUNK_PENDING, CHUNK_CREATING) or not past_deadline(chunk):
        return False
    if chunk.state == CHUNK_CREATING:
        try:
            ref = await svc.backends[chunk.backend].find_existing(
                chunk, svc.store.known_batch_ids(), _request_ids(svc, chunk)
            )
        except (TransientBackendError, OwnershipUnproven) as exc:  # cannot tell: end, say so
            log.warning("chunk %s: past its deadline, not reconciled (%s)", chunk.chunk_id, exc)
            ref = None
        if ref is not None:
            _record_submitted(svc, chunk, ref)
            return True
    await _end_all(
        svc,
        run,
        chunk,
        (chunk.state,),
        Outcome(
            status=EXPIRED,
            error_type="expired",
            error_message="not sent before the run's deadline",
        ),
    )
    log.warning("chunk %s: deadline passed before it was sent; lines end expired", chunk.chunk_id)
    return True


async def handle_pending(svc: Services, run: Run, chunk: Chunk) -> None:
    if run.cancel_requested:
        await end_unsent(svc, run, chunk, (CHUNK_PENDING,))
        return
    if await end_past_deadline(svc, run, chunk):
        return
    if quota.hold(svc, run, chunk):  # the vendor's enqueued-token cap: wait, or split
        return
    claimed = svc.store.transition(
        chunk.chunk_id, (CHUNK_PENDING,), state=CHUNK_CREATING, intent_at=time.time()
    )
    if claimed is not None:
        await _create(svc, run, claimed)


async def handle_creating(svc: Services, run: Run, chunk: Chunk) -> None:
    """A chunk left in `creating` (a crash, a failed create): find its batch before creating.

    A batch is adopted only on proof that it is this chunk's (backends' find_existing). While
    a candidate cannot be told apart yet the chunk waits, and nothing is created: past the
    deadline (or on cancel) its lines end, and the candidate is left alone, unproven.
    A transient error (listing, or the create itself) propagates: the round counts it
    as a failed step (`step_failed`), retried with backoff.
    """
    if await end_past_deadline(svc, run, chunk):
        return
    backend = svc.backends[chunk.backend]
    try:
        ref = await backend.find_existing(
            chunk, svc.store.known_batch_ids(), _request_ids(svc, chunk)
        )
    except OwnershipUnproven as exc:
        await _unproven(svc, run, chunk, exc)
        return
    if ref is not None:
        log.info("chunk %s: found its batch %s (proven its own)", chunk.chunk_id, ref.batch_id)
        _record_submitted(svc, chunk, ref)
    elif run.cancel_requested:
        await end_unsent(svc, run, chunk, (CHUNK_CREATING,))
    else:
        again = svc.store.transition(chunk.chunk_id, (CHUNK_CREATING,), intent_at=time.time())
        if again is not None:
            await _create(svc, run, again)


def _request_ids(svc: Services, chunk: Chunk) -> Callable[[], set[str]]:
    """The chunk's request ids, read from its file only when a backend needs them."""

    def read() -> set[str]:
        with svc.blobs(chunk.run_id).open(chunk.path) as src:
            return {vendor_id for vendor_id, _ in chunk_lines(src)}

    return read


async def _unproven(svc: Services, run: Run, chunk: Chunk, exc: OwnershipUnproven) -> None:
    """Wait for the candidates to end (then their ids prove or rule them out), up to the
    deadline; creating now could pay twice, adopting could take another application's."""
    batches = ", ".join(exc.batch_ids)
    if not run.cancel_requested and time.time() < chunk.deadline_at:
        log.info(
            "chunk %s: waiting for batch %s to end to prove whether it is this chunk's; "
            "not creating another",
            chunk.chunk_id,
            batches,
        )
        return
    status, kind = (CANCELED, "canceled") if run.cancel_requested else (EXPIRED, "expired")
    why = "run canceled" if run.cancel_requested else "the run's deadline passed"
    await _end_all(
        svc,
        run,
        chunk,
        (CHUNK_CREATING,),
        Outcome(
            status=status,
            error_type=kind,
            error_message=f"{why} while batchd could not yet prove whether vendor batch "
            f"{batches} holds this line; that batch was left alone",
        ),
    )


async def _create(svc: Services, run: Run, chunk: Chunk) -> None:
    """Create the vendor batch. A TransientBackendError propagates (counted as a failed step):
    the create may or may not have happened, so the chunk stays `creating` and the next
    try reconciles first. The lease is checked before each try (`check_fence`) and the
    record is a fenced write, refused if the lease was lost meanwhile."""
    backend = svc.backends[chunk.backend]
    try:
        with svc.blobs(run.run_id).local(chunk.path) as data_path:
            ref = await backend.create(chunk, str(data_path), svc.store.check_fence)
    except ChunkRejected as exc:
        await _end_all(
            svc,
            run,
            chunk,
            (CHUNK_CREATING,),
            Outcome(status=FAILED, error_type="batch_rejected", error_message=str(exc)),
        )
        return
    _record_submitted(svc, chunk, ref)


def _record_submitted(svc: Services, chunk: Chunk, ref: VendorRef) -> None:
    """A fenced write: refused (StaleLease) if this process lost the run's lease."""
    svc.store.transition(
        chunk.chunk_id,
        (CHUNK_CREATING,),
        state=CHUNK_SUBMITTED,
        vendor_batch_id=ref.batch_id,
        vendor_file_id=ref.file_id,
        submitted_at=time.time(),
        failures=0,  # the failures of `creating` are behind it: polling counts afresh
        error=None,
    )


async def handle_submitted(svc: Services, run: Run, chunk: Chunk) -> None:
    """Cancel at the deadline or on request, then poll. A transient error of either counts
    as a failed step; a poll that answers clears the count (only failures in a row count)."""
    backend = svc.backends[chunk.backend]
    if chunk.cancel_reason is None and (run.cancel_requested or past_deadline(chunk)):
        reason = "user" if run.cancel_requested else "deadline"
        await backend.cancel(chunk)
        got = svc.store.transition(chunk.chunk_id, (CHUNK_SUBMITTED,), cancel_reason=reason)
        chunk = got or chunk
    state = await backend.poll(chunk)
    fields: dict[str, Any] = {
        "vendor_status": state.status,
        "counts": {"done": state.done, "failed": state.failed, "total": state.total},
    }
    if chunk.failures:
        fields.update(failures=0, error=None)
    if state.terminal:
        fields.update(state=CHUNK_ENDED, ended_at=time.time())
    got = svc.store.transition(chunk.chunk_id, (CHUNK_SUBMITTED,), **fields)
    if got is not None and got.state == CHUNK_ENDED:
        await handle_ended(svc, run, got)


async def end_unsent(
    svc: Services,
    run: Run,
    chunk: Chunk,
    from_states: tuple[str, ...],
    message: str = "run canceled before this line was sent",
) -> None:
    await _end_all(
        svc,
        run,
        chunk,
        from_states,
        Outcome(status=CANCELED, error_type="canceled", error_message=message),
    )


async def _end_all(
    svc: Services, run: Run, chunk: Chunk, from_states: tuple[str, ...], outcome: Outcome
) -> None:
    """End every line of a chunk that never ran, with one outcome (naming the backend the
    lines were headed for)."""
    outcome = msgspec.structs.replace(outcome, backend=outcome.backend or chunk.backend)
    blobs = svc.blobs(run.run_id)
    result_path = f"outcomes/{chunk.chunk_id}.msgpack"
    with blobs.open(chunk.path) as src, blobs.writer(result_path) as f:
        n = write_outcomes(
            f,
            ((key_of(v), outcome) for v, _ in chunk_lines(src)),
        )
    svc.store.transition(
        chunk.chunk_id,
        from_states,
        state=CHUNK_COLLECTED,
        result_path=result_path,
        counts={"final": n, "succeeded": 0},
    )


async def step_failed(svc: Services, run: Run, chunk: Chunk, exc: Exception) -> None:
    """Count a failed step (transient or not); back off, or end the chunk's lines once the
    limit is hit. The backoff never passes the chunk's deadline, which is looked at then."""
    chunk = svc.store.get_chunk(chunk.chunk_id) or chunk  # a step may have moved it on
    if chunk.state == CHUNK_COLLECTED:
        log.warning("chunk %s: error after it was collected (ignored): %s", chunk.chunk_id, exc)
        return
    failures = chunk.failures + 1
    reason = f"{type(exc).__name__}: {exc}"
    log.warning(
        "chunk %s: step %s failed (%d/%d): %s",
        chunk.chunk_id,
        chunk.state,
        failures,
        svc.settings.max_step_failures,
        reason,
    )
    if failures < svc.settings.max_step_failures:
        delay = min(
            svc.settings.step_retry_base_s * 2 ** (failures - 1), svc.settings.step_retry_max_s
        )
        now = time.time()
        retry_at = now + delay
        if chunk.state in (CHUNK_PENDING, CHUNK_CREATING) and not past_deadline(chunk, now):
            retry_at = min(retry_at, chunk.deadline_at)
        svc.store.transition(
            chunk.chunk_id,
            (chunk.state,),
            failures=failures,
            retry_at=retry_at,
            error=reason,
        )
        return
    if chunk.state == CHUNK_CREATING and await _found_on_giving_up(svc, chunk):
        return
    if chunk.state == CHUNK_SUBMITTED and chunk.vendor_batch_id:
        with contextlib.suppress(Exception):  # best effort: stop paying for lines we end
            await svc.backends[chunk.backend].cancel(chunk)
    message = f"gave up after {failures} failed attempts of step '{chunk.state}': {reason}"
    try:
        await _end_all(
            svc,
            run,
            chunk,
            (chunk.state,),
            Outcome(status=FAILED, error_type="step_failed", error_message=message),
        )
    except OSError:  # the chunk file itself is gone: end the chunk with no outcome part
        svc.store.transition(
            chunk.chunk_id,
            (chunk.state,),
            state=CHUNK_COLLECTED,
            error=message,
            counts={"final": 0, "succeeded": 0},
        )


async def _found_on_giving_up(svc: Services, chunk: Chunk) -> bool:
    """Before ending a `creating` chunk's lines: a failed create may have created the batch."""
    try:
        ref = await svc.backends[chunk.backend].find_existing(
            chunk, svc.store.known_batch_ids(), _request_ids(svc, chunk)
        )
    except (TransientBackendError, OwnershipUnproven):
        return False
    if ref is None:
        return False
    _record_submitted(svc, chunk, ref)
    return True


STEP = {
    CHUNK_PENDING: handle_pending,
    CHUNK_CREATING: handle_creating,
    CHUNK_SUBMITTED: handle_submitted,
    CHUNK_ENDED: handle_ended,
}
