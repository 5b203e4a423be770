"""The deadline guard: at deadline - margin, finish what the vendor batches have not, in time.

When a chunk's guard time comes (its deadline less the run's guard margin; default 10% of
the run's time from submit to deadline, clamped to 1 min - 1 h) and the run's fallback is
not `none`:
- a vendor chunk not yet created is sent synchronously instead (its `tier` becomes the
  run's fallback);
- a submitted batch is cancelled (`cancel_reason` "guard"); the vendor returns the lines it
  finished, collect keeps them and puts the rest in a child chunk with the fallback tier;
- a chunk whose tier is `flex` or `realtime` is sent line by line here: OpenAI with
  `service_tier: "flex"` first where the model has it (billed at the batch price; a shed
  429 or a timeout falls through to the standard tier under `realtime`, is retried on flex
  under `flex`), Claude through the Messages API; bounded concurrency per vendor,
  Retry-After honoured, 5xx retried with backoff, all until the chunk's deadline; lines not
  answered by then end `expired`.

- a vLLM chunk of alias lines (it has a `release_path`: the same lines for the alias's vendor
  target, `planning.release`) is released: not yet handed to the GPU, its lines go to that
  vendor target at once; on the GPU, it admits nothing more (what the engine holds finishes
  and is checkpointed: nothing computed is lost) and collect sends the lines it did not
  finish there. The vendor chunk is sent synchronously where the guard can (`flex` /
  `realtime` by the fallback, OpenAI and Anthropic), else as a batch.

Only OpenAI and Anthropic chunks and the alias lines of vLLM chunks are guarded (other
providers' batches and plain vLLM lines, which no vendor serves, keep their own path). A
crash while a chunk is sent synchronously resends that chunk's lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from batchd.backends.anthropic_sync import AnthropicSync
from batchd.backends.base import TransientBackendError
from batchd.backends.openai_sync import OpenAISync
from batchd.backends.schema_check import settle
from batchd.backends.sync_call import RATE_LIMITED, SHED, TIMEOUT, SyncReply
from batchd.backends.vllm.backend import VllmBackend
from batchd.config.pricing import Usage
from batchd.intake.decode import cacheable, key_of
from batchd.outcome import EXPIRED, SUCCEEDED, Outcome
from batchd.requests import ENDPOINT_URLS
from batchd.run.services import Services
from batchd.state.base import (
    CHUNK_COLLECTED,
    CHUNK_CREATING,
    CHUNK_PENDING,
    CHUNK_SUBMITTED,
    Chunk,
    Run,
)
from batchd.storage.chunk_outcomes import chunk_lines, write_outcomes

log = logging.getLogger("batchd.guard")

BATCH = "batch"
FLEX = "flex"
REALTIME = "realtime"
NONE = "none"
GUARDED_BACKENDS = ("openai", "anthropic")
VLLM = "vllm"
MIN_MARGIN_S, MAX_MARGIN_S, MARGIN_SHARE = 60.0, 3600.0, 0.10
LINES_PER_ROUND = 512  # lines read and sent at once (memory stays bounded)
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 30.0

clock: Callable[[], float] = time.time  # tests may inject another clock


def fallback(svc: Services, run: Run) -> str:
    return str(run.options.get("fallback") or svc.settings.fallback)


def margin_s(svc: Services, run: Run) -> float:
    """How long before a deadline the guard fires (run option, setting, else 10%)."""
    given = float(run.options.get("guard_margin_s") or svc.settings.guard_margin_s or 0.0)
    if given > 0:
        return given
    span = max(run.deadline_at - (run.created_at or run.deadline_at), 0.0)
    return min(max(span * MARGIN_SHARE, MIN_MARGIN_S), MAX_MARGIN_S)


def releasable(chunk: Chunk) -> bool:
    """A vLLM chunk of alias lines: a vendor can take what the GPU has not run."""
    return chunk.backend == VLLM and bool(chunk.release_path and chunk.release_backend)


def due(svc: Services, run: Run, chunk: Chunk, now: float) -> bool:
    """Has this chunk's guard time come (and may the guard act on it)?"""
    return (
        (chunk.backend in GUARDED_BACKENDS or releasable(chunk))
        and not run.cancel_requested
        and fallback(svc, run) != NONE
        and now >= chunk.deadline_at - margin_s(svc, run)
    )


def retry_tier(svc: Services, run: Run, chunk: Chunk, now: float) -> str:
    """The tier of a chunk resending a parent's lines: the fallback once the guard fired."""
    if chunk.tier != BATCH or chunk.cancel_reason == "guard" or due(svc, run, chunk, now):
        return chunk.tier if chunk.tier != BATCH else fallback(svc, run)
    return BATCH


async def before_step(svc: Services, run: Run, chunk: Chunk) -> Chunk | None:
    """The guard's hook before a chunk's step: the chunk to step on, or None when handled."""
    now = clock()
    if chunk.tier != BATCH and chunk.state in (CHUNK_PENDING, CHUNK_CREATING):
        if run.cancel_requested:
            return chunk  # the normal step ends its lines canceled
        await send_sync(svc, run, chunk)
        return None
    if not due(svc, run, chunk, now):
        return chunk
    if chunk.backend == VLLM:
        return await _release_gpu(svc, run, chunk)
    if chunk.state == CHUNK_PENDING:
        moved = svc.store.transition(chunk.chunk_id, (CHUNK_PENDING,), tier=fallback(svc, run))
        if moved is not None:
            log.info("chunk %s: guard time, sent synchronously", chunk.chunk_id)
            await send_sync(svc, run, moved)
        return None
    if chunk.state == CHUNK_SUBMITTED and chunk.cancel_reason is None:
        try:
            await svc.backends[chunk.backend].cancel(chunk)
        except TransientBackendError as exc:
            log.warning("chunk %s: guard cancel failed for now (%s)", chunk.chunk_id, exc)
            return chunk
        log.info("chunk %s: guard time, batch cancelled", chunk.chunk_id)
        got = svc.store.transition(chunk.chunk_id, (CHUNK_SUBMITTED,), cancel_reason="guard")
        return got or chunk
    return chunk


def release_tier(svc: Services, run: Run, backend: str) -> str:
    """The tier GPU lines released at guard time go to their vendor with."""
    return fallback(svc, run) if backend in GUARDED_BACKENDS else BATCH


def release_child(svc: Services, run: Run, chunk: Chunk, path: str) -> Chunk:
    """The vendor chunk (empty; filled by the caller) for a vLLM chunk's released lines."""
    base, _, gen = chunk.chunk_id.partition(".")
    chunk_id = f"{base}r" + (f".{gen}" if gen else "")
    return Chunk(
        chunk_id=chunk_id,
        run_id=chunk.run_id,
        backend=chunk.release_backend,
        model=chunk.release_model,
        path=path,
        n_requests=0,
        n_bytes=0,
        attempt=chunk.attempt,
        deadline_at=chunk.deadline_at,
        prompt_cache=chunk.prompt_cache,
        tier=release_tier(svc, run, chunk.release_backend),
        endpoint=chunk.endpoint,
    )


async def _release_gpu(svc: Services, run: Run, chunk: Chunk) -> Chunk | None:
    """Guard time of a vLLM chunk of alias lines: what the GPU has not run goes to a vendor."""
    if chunk.state == CHUNK_PENDING:  # nothing handed to the GPU: every line goes
        assert chunk.release_path is not None
        child = release_child(svc, run, chunk, chunk.release_path)
        with svc.blobs(run.run_id).open(chunk.release_path) as src:
            for _, line in chunk_lines(src):
                child.n_requests += 1
                child.n_bytes += len(line)
        child.est_max_tokens = chunk.est_max_tokens
        moved = svc.store.transition(
            chunk.chunk_id,
            (CHUNK_PENDING,),
            new_children=[child],
            state=CHUNK_COLLECTED,
            counts={"final": 0, "succeeded": 0, "moved": chunk.n_requests},
        )
        if moved is not None:
            log.info(
                "chunk %s: guard time and not on the GPU; its %d lines go to %s:%s (%s)",
                chunk.chunk_id,
                child.n_requests,
                child.backend,
                child.model,
                child.tier,
            )
        return None
    if chunk.state in (CHUNK_CREATING, CHUNK_SUBMITTED) and chunk.cancel_reason is None:
        backend = svc.backends[VLLM]
        if isinstance(backend, VllmBackend):
            await backend.release(chunk)
        fields: dict[str, Any] = {"cancel_reason": "guard"}
        if chunk.state == CHUNK_CREATING:  # handed over, maybe: the poll settles it
            fields.update(state=CHUNK_SUBMITTED, vendor_batch_id=f"vllm-{chunk.chunk_id}")
        got = svc.store.transition(chunk.chunk_id, (chunk.state,), **fields)
        log.info("chunk %s: guard time; the GPU admits none of it from now on", chunk.chunk_id)
        return got or chunk
    return chunk


async def send_sync(svc: Services, run: Run, chunk: Chunk) -> None:
    """Send every line of a flex/realtime chunk synchronously; settle it `collected`."""
    claimed = svc.store.transition(
        chunk.chunk_id, (CHUNK_PENDING, CHUNK_CREATING), state=CHUNK_CREATING, intent_at=clock()
    )
    if claimed is None:
        return
    sender = _Sender(svc, claimed)
    blobs = svc.blobs(run.run_id)
    result_path = f"outcomes/{chunk.chunk_id}.msgpack"
    succeeded = final = 0
    cost = 0.0
    try:
        with blobs.open(chunk.path) as src, blobs.writer(result_path) as out:
            batch: list[tuple[str, bytes]] = []
            for item in chunk_lines(src):
                batch.append(item)
                if len(batch) >= LINES_PER_ROUND:
                    done = await sender.send_all(batch)
                    succeeded, final, cost = _write(svc, out, done, succeeded, final, cost)
                    batch = []
            if batch:
                done = await sender.send_all(batch)
                succeeded, final, cost = _write(svc, out, done, succeeded, final, cost)
    finally:
        await sender.aclose()
    svc.store.transition(
        chunk.chunk_id,
        (CHUNK_CREATING,),
        state=CHUNK_COLLECTED,
        result_path=result_path,
        submitted_at=claimed.intent_at,
        ended_at=clock(),
        counts={"succeeded": succeeded, "final": final},
        cost_usd=cost,
    )


def _write(
    svc: Services, out: Any, done: list[tuple[str, Outcome]], ok: int, final: int, cost: float
) -> tuple[int, int, float]:
    write_outcomes(out, ((key_of(v), o) for v, o in done))
    svc.cache.put_many((key_of(v), o) for v, o in done if cacheable(v) and o.status == SUCCEEDED)
    ok += sum(o.status == SUCCEEDED for _, o in done)
    return ok, final + len(done), cost + sum(o.cost_usd for _, o in done)


class _Sender:
    """One chunk's synchronous calls: bounded concurrency, retries within the deadline."""

    def __init__(self, svc: Services, chunk: Chunk) -> None:
        self.svc = svc
        self.chunk = chunk
        self.openai = OpenAISync(svc.settings.openai) if chunk.backend == "openai" else None
        self.claude = (
            AnthropicSync(svc.settings.anthropic) if chunk.backend == "anthropic" else None
        )
        conc = (svc.settings.openai if self.openai else svc.settings.anthropic).sync_concurrency
        self.slots = asyncio.Semaphore(conc)
        self.tiers = self._tiers()

    def _tiers(self) -> list[str]:
        if self.claude is not None:
            return [REALTIME] if self.chunk.tier == REALTIME else []
        assert self.openai is not None
        flex = self.openai.has_flex(self.chunk.model)
        if self.chunk.tier == FLEX:
            return [FLEX] if flex else []
        return [FLEX, REALTIME] if flex else [REALTIME]

    async def send_all(self, lines: list[tuple[str, bytes]]) -> list[tuple[str, Outcome]]:
        outcomes = await asyncio.gather(*(self._one(line) for _, line in lines))
        return [(v, settle(o, line)) for (v, line), o in zip(lines, outcomes, strict=True)]

    async def _one(self, line: bytes) -> Outcome:
        obj = msgspec.json.decode(line)
        body = obj["body"] if self.openai is not None else obj["params"]
        if not self.tiers:
            return _expired(f"the {self.chunk.tier} fallback has no tier for {self.chunk.model}")
        async with self.slots:
            return await self._until_deadline(body)

    async def _until_deadline(self, body: dict[str, Any]) -> Outcome:
        step, failures = 0, 0
        while True:
            left = self.chunk.deadline_at - clock()
            if left <= 0:
                return _expired("not done before the run's deadline (synchronous fallback)")
            tier = self.tiers[step]
            reply = await self._call(body, tier, left)
            if reply.outcome is not None:
                return self._stamp(reply.outcome, tier)
            if reply.kind in (SHED, TIMEOUT) and tier == FLEX and step + 1 < len(self.tiers):
                step += 1  # flex had no room: the standard tier
                continue
            failures += 1
            wait = reply.retry_after_s if reply.kind in (SHED, RATE_LIMITED) else None
            if wait is None:
                wait = min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)
            await asyncio.sleep(min(wait, max(left, 0.0)))

    async def _call(self, body: dict[str, Any], tier: str, left_s: float) -> SyncReply:
        if self.openai is not None:
            limit = self.svc.settings.openai.flex_timeout_s if tier == FLEX else None
            timeout = min(limit or self.svc.settings.openai.timeout_s, left_s)
            url = ENDPOINT_URLS[self.chunk.endpoint]
            return await self.openai.send(body, tier == FLEX, timeout, url)
        assert self.claude is not None
        return await self.claude.send(body, min(self.svc.settings.anthropic.timeout_s, left_s))

    def _stamp(self, o: Outcome, tier: str) -> Outcome:
        o.backend = self.chunk.backend
        o.model_used = o.model_used or self.chunk.model
        o.tier = tier
        o.submitted_at = self.chunk.intent_at
        o.completed_at = clock()
        price = self.svc.prices.lookup(o.model_used) or self.svc.prices.lookup(self.chunk.model)
        if price is not None and (o.input_tokens or o.output_tokens):
            usage = Usage(
                o.input_tokens,
                o.cached_input_tokens,
                o.cache_write_tokens,
                o.output_tokens,
                o.cache_write_1h_tokens,
            )
            o.cost_usd = self.svc.prices.cost_usd(price, usage, batch=tier == FLEX)
        return o

    async def aclose(self) -> None:
        for client in (self.openai, self.claude):
            if client is not None:
                await client.aclose()


def _expired(message: str) -> Outcome:
    return Outcome(status=EXPIRED, error_type="expired", error_message=message)
