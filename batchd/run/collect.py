"""Collect: read an ended vendor batch and settle every line of its chunk.

Successes and final failures become the chunk's outcome part; lines that may be
retried become a child chunk while the deadline allows: transient errors while attempts
allow, lines the vendor never ran (expired, or cut off by the deadline guard's cancel)
whatever the attempts, as they were not billed; once the guard fired the child is sent
synchronously (`run.deadline_guard`). A line that succeeded is never sent again.
Memory stays bounded: the vendor's results stream into a scratch index, then the chunk
file is walked in batches.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec

from batchd.backends.base import ChunkRejected, QuotaExceeded
from batchd.backends.schema_check import settle
from batchd.config.pricing import Usage
from batchd.intake.decode import cacheable, key_of
from batchd.outcome import CANCELED, EXPIRED, FAILED, SUCCEEDED, Outcome
from batchd.run import deadline_guard, quota
from batchd.run.cascade import Cascade, drop_empty
from batchd.run.services import Services
from batchd.state.base import CHUNK_COLLECTED, CHUNK_ENDED, Chunk, Run
from batchd.storage.chunk_outcomes import chunk_lines, write_outcomes
from batchd.storage.sqlkeys import select_in

log = logging.getLogger("batchd.collect")

BATCH_LINES = 1000
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Outcome)


async def handle_ended(svc: Services, run: Run, chunk: Chunk) -> None:
    """Read the vendor's results; keep the final ones, resubmit what may be retried.

    A TransientBackendError (results not readable yet) propagates: the round counts it as
    a failed step, retried with backoff (run.dispatch.step_failed).
    """
    with tempfile.TemporaryDirectory(dir=svc.home) as tmp:
        index = sqlite3.connect(Path(tmp) / "reported.db")
        try:
            rejected = await _index_results(svc, chunk, index)
            _settle(svc, run, chunk, index, rejected)
        except QuotaExceeded as exc:  # nothing ran: the same lines again, under the cap
            quota.requeue(svc, run, chunk, exc)
        finally:
            index.close()


async def _index_results(svc: Services, chunk: Chunk, index: sqlite3.Connection) -> str | None:
    """Stream the vendor's results into `index`; the reason when the whole batch was rejected."""
    index.execute("CREATE TABLE r (vid TEXT PRIMARY KEY, outcome BLOB) WITHOUT ROWID")
    pending: list[tuple[str, bytes]] = []
    try:
        async for vendor_id, outcome in svc.backends[chunk.backend].results(chunk):
            pending.append((vendor_id, _enc.encode(outcome)))
            if len(pending) >= BATCH_LINES:
                index.executemany("INSERT OR REPLACE INTO r VALUES (?, ?)", pending)
                pending = []
    except QuotaExceeded:
        raise
    except ChunkRejected as exc:
        return str(exc)
    index.executemany("INSERT OR REPLACE INTO r VALUES (?, ?)", pending)
    return None


def _settle(
    svc: Services, run: Run, chunk: Chunk, index: sqlite3.Connection, rejected: str | None
) -> None:
    blobs = svc.blobs(run.run_id)
    now = deadline_guard.clock()
    in_time = not run.cancel_requested and now < chunk.deadline_at
    can_retry = in_time and chunk.attempt < svc.settings.max_attempts
    released = chunk.cancel_reason == "guard" and deadline_guard.releasable(chunk)
    if released:  # the GPU did not run them by the guard time: to the alias's vendor
        child = deadline_guard.release_child(svc, run, chunk, f"chunks/{chunk.chunk_id}r.jsonl")
    else:
        child = _retry_chunk(chunk, deadline_guard.retry_tier(svc, run, chunk, now))
    real_failures = 0
    result_path = f"outcomes/{chunk.chunk_id}.msgpack"
    succeeded = final = 0
    cost = 0.0
    with ExitStack() as files:
        src = files.enter_context(blobs.open(chunk.path))
        out = files.enter_context(blobs.writer(result_path))
        retry_out = files.enter_context(blobs.writer(child.path))
        release_lines, child_release = _release_files(blobs, chunk, child, released, files)
        cascade = Cascade(svc, run, chunk, child, files, released=released, now=now)
        for lines in _batched(chunk_lines(src)):
            reported = _lookup(index, [v for v, _ in lines]) if rejected is None else {}
            settled: list[tuple[str, Outcome]] = []
            for vendor_id, line in lines:
                release_line = _next_release_line(release_lines, vendor_id)
                record = cascade.record()
                if rejected is not None:
                    o = Outcome(status=FAILED, error_type="batch_failed", error_message=rejected)
                else:
                    o = reported.get(vendor_id) or _missing(chunk)
                unrun = rejected is None and _never_ran(o, chunk)
                o = _by_cancel_reason(o, chunk)
                if (unrun and in_time) or (o.status != SUCCEEDED and o.retryable and can_retry):
                    real_failures += not unrun
                    sent = release_line if released and release_line is not None else line
                    retry_out.write(sent)
                    if child_release is not None and release_line is not None:
                        child_release.write(release_line)
                    cascade.retried(record)
                    child.n_requests += 1
                    child.n_bytes += len(sent)
                    continue
                o = settle(_stamp(svc, chunk, o), line)
                if not cascade.settle(vendor_id, o, record):
                    settled.append((vendor_id, o))
            write_outcomes(out, ((key_of(v), o) for v, o in settled))
            svc.cache.put_many((key_of(v), o) for v, o in settled if cacheable(v))
            final += len(settled)
            succeeded += sum(o.status == SUCCEEDED for _, o in settled)
            cost += sum(o.cost_usd for _, o in settled)
    escalations, escalated_path = cascade.finish()
    if real_failures:
        child.attempt += 1  # only real failures use up attempts
    if child.n_requests == 0:
        blobs.remove(child.path)
        if child.release_path:
            blobs.remove(child.release_path)
        drop_empty(svc, run, child)
    svc.store.transition(
        chunk.chunk_id,
        (CHUNK_ENDED,),
        new_children=([child] if child.n_requests else []) + escalations,
        escalated_path=escalated_path,
        state=CHUNK_COLLECTED,
        result_path=result_path,
        counts={"succeeded": succeeded, "final": final, "retried": child.n_requests},
        cost_usd=cost + cascade.cost_usd,
    )


def _release_files(
    blobs: Any, chunk: Chunk, child: Chunk, released: bool, files: ExitStack
) -> tuple[Iterator[tuple[str, bytes]] | None, Any]:
    """The chunk's release lines (read in step with its lines), and where a vLLM retry
    child keeps its own (None when it has none)."""
    if not chunk.release_path:
        return None, None
    lines = chunk_lines(files.enter_context(blobs.open(chunk.release_path)))
    if released:
        return lines, None
    child.release_backend, child.release_model = chunk.release_backend, chunk.release_model
    child.release_path = child.path.removesuffix(".jsonl") + ".release.jsonl"
    return lines, files.enter_context(blobs.writer(child.release_path))


def _next_release_line(lines: Iterator[tuple[str, bytes]] | None, vendor_id: str) -> bytes | None:
    if lines is None:
        return None
    got = next(lines, None)
    if got is None or got[0] != vendor_id:  # written in step with the chunk file
        raise RuntimeError(f"release lines of the chunk out of step at {vendor_id}")
    return got[1]


def _batched(items: Iterator[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    batch: list[tuple[str, bytes]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH_LINES:
            yield batch
            batch = []
    if batch:
        yield batch


def _lookup(index: sqlite3.Connection, vendor_ids: list[str]) -> dict[str, Outcome]:
    sql = "SELECT vid, outcome FROM r WHERE vid IN ({keys})"
    return {vid: _dec.decode(blob) for vid, blob in select_in(index, sql, vendor_ids)}


def _missing(chunk: Chunk) -> Outcome:
    """A line the vendor's files do not mention, read by the batch's final status."""
    status = chunk.vendor_status
    if status == "expired":
        return Outcome(
            status=EXPIRED,
            error_type="expired",
            error_message="not done before the batch expired",
            retryable=True,
        )
    if status == "cancelled":
        return Outcome(status=CANCELED, error_type="canceled", error_message="run canceled")
    return Outcome(
        status=FAILED,
        error_type="missing_from_output",
        error_message="the vendor reported no result for this line",
        retryable=True,
    )


def _never_ran(o: Outcome, chunk: Chunk) -> bool:
    """A line the vendor never ran (not billed): expired, or cut off by the guard's cancel."""
    if o.status == EXPIRED and o.retryable:
        return True
    return chunk.cancel_reason == "guard" and (
        o.status == CANCELED or o.error_type == "missing_from_output"
    )


def _by_cancel_reason(o: Outcome, chunk: Chunk) -> Outcome:
    """Lines cut off by batchd's own cancel (the deadline, or the guard's when they could not
    be resent) end `expired`, not `canceled`."""
    if o.status == CANCELED and chunk.cancel_reason in ("deadline", "guard"):
        return Outcome(
            status=EXPIRED, error_type="expired", error_message="not done before the run's deadline"
        )
    return o


def _stamp(svc: Services, chunk: Chunk, o: Outcome) -> Outcome:
    o.backend = chunk.backend
    o.model_used = o.model_used or chunk.model
    if o.status in (SUCCEEDED, FAILED) and o.tier is None:
        o.tier = "gpu" if chunk.backend == "vllm" else "batch"
    o.submitted_at = chunk.submitted_at
    o.completed_at = chunk.ended_at
    o.retryable = False
    if (o.input_tokens or o.output_tokens) and not o.gpu_seconds:
        price = svc.prices.lookup(o.model_used) or svc.prices.lookup(chunk.model)
        if price is not None:
            usage = Usage(
                o.input_tokens,
                o.cached_input_tokens,
                o.cache_write_tokens,
                o.output_tokens,
                o.cache_write_1h_tokens,
            )
            o.cost_usd = svc.prices.cost_usd(price, usage, batch=True)
    return o


def _retry_chunk(parent: Chunk, tier: str) -> Chunk:
    """The chunk that resends a parent's retryable lines (filled while settling).

    Named by generation (`<base>.<n>`); its attempt grows only when real failures are resent.
    """
    base, _, gen = parent.chunk_id.partition(".")
    chunk_id = f"{base}.{int(gen or 1) + 1}"
    return Chunk(
        chunk_id=chunk_id,
        run_id=parent.run_id,
        backend=parent.backend,
        model=parent.model,
        path=f"chunks/{chunk_id}.jsonl",
        n_requests=0,
        n_bytes=0,
        attempt=parent.attempt,
        deadline_at=parent.deadline_at,
        prompt_cache=parent.prompt_cache,
        tier=tier,
        endpoint=parent.endpoint,
    )
