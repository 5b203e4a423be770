"""The chunk state machine: pending -> creating -> submitted -> ended -> collected.

Each step is a small function that changes the chunk with a compare-and-set, so
repeating a step after a crash is harmless. Exactly-once billing: the intent
(`creating`) is recorded before the vendor batch is created, and a chunk found
in `creating` is first reconciled with the vendor's batch list, adopting only a batch
proven to be its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from batchd.backends.base import (
    ChunkRejected,
    OwnershipUnproven,
    TransientBackendError,
    VendorRef,
)
from batchd.intake.decode import key_of
from batchd.outcome import CANCELED, EXPIRED, FAILED, Outcome
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


async def handle_pending(svc: Services, run: Run, chunk: Chunk) -> None:
    if run.cancel_requested:
        await end_unsent(svc, run, chunk, (CHUNK_PENDING,))
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
    """
    backend = svc.backends[chunk.backend]

    def request_ids() -> set[str]:
        with svc.blobs(run.run_id).open(chunk.path) as src:
            return {vendor_id for vendor_id, _ in chunk_lines(src)}

    try:
        ref = await backend.find_existing(chunk, svc.store.known_batch_ids(), request_ids)
    except TransientBackendError as exc:
        log.warning("chunk %s: cannot reconcile yet (%s); will retry", chunk.chunk_id, exc)
        return
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
    backend = svc.backends[chunk.backend]
    try:
        with svc.blobs(run.run_id).local(chunk.path) as data_path:
            ref = await backend.create(chunk, str(data_path))
    except TransientBackendError as exc:
        # The create may or may not have happened: stay in `creating`, reconcile next round.
        log.warning("chunk %s: create failed for now (%s); will reconcile", chunk.chunk_id, exc)
        return
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
    svc.store.transition(
        chunk.chunk_id,
        (CHUNK_CREATING,),
        state=CHUNK_SUBMITTED,
        vendor_batch_id=ref.batch_id,
        vendor_file_id=ref.file_id,
        submitted_at=time.time(),
    )


async def handle_submitted(svc: Services, run: Run, chunk: Chunk) -> None:
    backend = svc.backends[chunk.backend]
    now = time.time()
    if chunk.cancel_reason is None and (run.cancel_requested or now >= chunk.deadline_at):
        reason = "user" if run.cancel_requested else "deadline"
        try:
            await backend.cancel(chunk)
        except TransientBackendError as exc:
            log.warning("chunk %s: cancel failed for now (%s)", chunk.chunk_id, exc)
            return
        got = svc.store.transition(chunk.chunk_id, (CHUNK_SUBMITTED,), cancel_reason=reason)
        chunk = got or chunk
    try:
        state = await backend.poll(chunk)
    except TransientBackendError as exc:
        log.warning("chunk %s: poll failed for now (%s)", chunk.chunk_id, exc)
        return
    fields: dict[str, Any] = {
        "vendor_status": state.status,
        "counts": {"done": state.done, "failed": state.failed, "total": state.total},
    }
    if state.terminal:
        fields.update(state=CHUNK_ENDED, ended_at=time.time())
    got = svc.store.transition(chunk.chunk_id, (CHUNK_SUBMITTED,), **fields)
    if got is not None and got.state == CHUNK_ENDED:
        await handle_ended(svc, run, got)


async def end_unsent(svc: Services, run: Run, chunk: Chunk, from_states: tuple[str, ...]) -> None:
    await _end_all(
        svc,
        run,
        chunk,
        from_states,
        Outcome(
            status=CANCELED,
            error_type="canceled",
            error_message="run canceled before this line was sent",
        ),
    )


async def _end_all(
    svc: Services, run: Run, chunk: Chunk, from_states: tuple[str, ...], outcome: Outcome
) -> None:
    """End every line of a chunk that never ran, with one outcome."""
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
    """Count an unexpected error; back off, or end the chunk's lines once the limit is hit."""
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
        svc.store.transition(
            chunk.chunk_id,
            (chunk.state,),
            failures=failures,
            retry_at=time.time() + delay,
            error=reason,
        )
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


STEP = {
    CHUNK_PENDING: handle_pending,
    CHUNK_CREATING: handle_creating,
    CHUNK_SUBMITTED: handle_submitted,
    CHUNK_ENDED: handle_ended,
}
