"""The vLLM backend: chunks run on self-hosted GPUs instead of a vendor's batch API.

It follows the same protocol as the vendor backends, so dispatch and collect treat a
GPU chunk like any batch. `create` hands the chunk to a GPU runner: in embedded mode
the engine in this process (started on first use), in distributed mode a job on the
`gpu` queue for `workers/gpu.py`. `poll` reads the chunk's done marker; `results`
reads its checkpoint parts. Creating twice is harmless: a rerun skips checkpointed
lines, and no vendor bills it.

`encode_line` checks each request against the model that serves it (its kind, tools,
parameters) without a tokenizer, so a line no served model can run is `invalid` with the
reason at ingest, and an alias places it on another target.

In embedded mode a chunk created outside the windows is
handed to the engine only once they open (no engine is started for work that waits).
`release` (the deadline guard) stops admitting a chunk's requests: what the engine holds
finishes and is checkpointed, the rest goes to a vendor (run.deadline_guard).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from batchd.backends.base import PollState, SpendGuard, UnsupportedRequest, VendorRef
from batchd.backends.responses_chat import as_chat
from batchd.backends.vllm.prompts import Refused, plan_of
from batchd.backends.vllm.runner import (
    CANCELLED,
    GpuRunner,
    checkpointed,
    read_done,
    request_cancel,
)
from batchd.backends.vllm.windows import Windows
from batchd.config.settings import VllmSettings
from batchd.outcome import Outcome
from batchd.requests import RESPONSES, Request
from batchd.state.base import Chunk
from batchd.storage.blobs import Blobs

GPU_QUEUE = "batchd:gpu"
_enc = msgspec.json.Encoder()


def window_gate(cfg: VllmSettings, clock: Callable[[], float] = time.time) -> Callable[[], bool]:
    """True while the GPUs may admit work: inside a window, before its closing margin."""
    if not cfg.windows:
        return lambda: True
    windows = Windows(cfg.windows, cfg.timezone)
    return lambda: windows.admitting(datetime.fromtimestamp(clock(), UTC), cfg.admit_margin_s)


def next_admission_s(cfg: VllmSettings, clock: Callable[[], float] = time.time) -> float:
    """Seconds until the GPUs may admit work again (0 when they may now)."""
    if not cfg.windows:
        return 0.0
    windows = Windows(cfg.windows, cfg.timezone)
    now = datetime.fromtimestamp(clock(), UTC)
    if windows.admitting(now, cfg.admit_margin_s):
        return 0.0
    return max((windows.next_open(now) - now).total_seconds(), 0.0)


def _served(model: str) -> str:
    return model.removeprefix("vllm:")


class GpuQueue:
    """Distributed mode: GPU chunks become jobs on the `gpu` queue (arq)."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._pool: Any = None

    async def enqueue(self, chunk: Chunk) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        if self._pool is None:
            self._pool = await create_pool(
                RedisSettings.from_dsn(self._redis_url), default_queue_name=GPU_QUEUE
            )
        await self._pool.enqueue_job(
            "gpu_chunk", chunk.run_id, chunk.chunk_id, _job_id=f"gpu:{chunk.chunk_id}"
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class VllmBackend:
    name = "vllm"

    def __init__(
        self,
        cfg: VllmSettings,
        runner: GpuRunner | None = None,
        queue: GpuQueue | None = None,
    ) -> None:
        self.cfg = cfg
        self._runner = runner
        self._queue = queue
        self._blobs_of: Callable[[str], Blobs] | None = None
        # distributed mode: is a gpu worker running this chunk now (holding its lease)?
        self.busy: Callable[[str], bool] = lambda _chunk_id: False

    def bind(self, blobs_of: Callable[[str], Blobs]) -> None:
        self._blobs_of = blobs_of

    @property
    def gpu_turn(self) -> threading.Lock | None:
        """The step lock of the engines in this process (embedded mode; None: distributed)."""
        return self._runner.gpu_turn if self._runner is not None else None

    def _blobs(self, chunk: Chunk) -> Blobs:
        assert self._blobs_of is not None, "VllmBackend.bind() was not called"
        return self._blobs_of(chunk.run_id)

    def check_ready(self) -> None:
        """Nothing is bought from a vendor here: the engine (or a gpu worker) reports its
        own start-up errors on the chunk."""

    def encode_line(self, vendor_id: str, request: Request) -> bytes:
        model = request.body.get("model", request.model)
        engine = self.cfg.engine(str(model).removeprefix("vllm:"))
        if engine is None:
            raise UnsupportedRequest(f"the vLLM worker does not serve model {model!r}")
        if request.endpoint == RESPONSES:  # Responses as chat (backends.responses_chat)
            request = as_chat(request, "vLLM")
        endpoint, body = request.endpoint, request.body
        try:
            plan_of(endpoint, body, engine.kind, engine.tool_parser, engine.name, engine.images)
        except Refused as exc:
            raise UnsupportedRequest(str(exc)) from exc
        return _enc.encode({"custom_id": vendor_id, "endpoint": endpoint, "body": body})

    async def create(self, chunk: Chunk, data_path: str, guard: SpendGuard) -> VendorRef:
        guard()  # GPU time is not billed per call, but a stale coordinator starts nothing
        await self._start(chunk)
        return VendorRef(batch_id=f"vllm-{chunk.chunk_id}")

    async def _start(self, chunk: Chunk) -> None:
        if self._queue is not None:
            await self._queue.enqueue(chunk)
        elif self._runner is not None and self._runner.admitting():  # else: when they open
            await asyncio.to_thread(
                self._runner.start_chunk,
                chunk.chunk_id,
                _served(chunk.model),  # lines may ask for `vllm:<name>`; rows name the model
                chunk.path,
                self._blobs(chunk),
            )

    async def find_existing(
        self, chunk: Chunk, known_batch_ids: set[str], request_ids: Callable[[], set[str]]
    ) -> VendorRef | None:
        return None  # creating again resumes from the checkpoints: nothing is paid twice

    async def poll(self, chunk: Chunk) -> PollState:
        blobs = self._blobs(chunk)
        done = read_done(blobs, chunk.chunk_id)
        if done is not None:
            return PollState(
                status=done.state, terminal=True, done=done.n_outcomes, total=done.n_requests
            )
        if chunk.cancel_reason is not None:
            job = self._runner.job(chunk.chunk_id) if self._runner is not None else None
            running = job is not None and job.state == "running"
            if running or (self._queue is not None and self.busy(chunk.chunk_id)):
                # released: the engine finishes what it holds, then writes the done marker
                return PollState(status="releasing", terminal=False, total=chunk.n_requests)
            return PollState(status=CANCELLED, terminal=True, total=chunk.n_requests)
        if self._queue is not None:  # a lost job comes back; a live one is not doubled
            await self._queue.enqueue(chunk)
        if self._runner is not None:
            job = self._runner.job(chunk.chunk_id)
            if job is None:  # this process restarted: resume from the checkpoints
                await self._start(chunk)
                job = self._runner.job(chunk.chunk_id)
            if job is None:  # outside the windows: not handed to the engine yet
                total = chunk.n_requests
                return PollState(status="waiting_for_window", terminal=False, total=total)
            queued, _ = self._runner.counts()
            waiting = queued and not self._runner.admitting()
            return PollState(
                status="waiting_for_window" if waiting else "in_progress",
                terminal=False,
                done=job.n_outcomes,
                total=job.n_requests,
            )
        return PollState(status="in_progress", terminal=False, total=chunk.n_requests)

    async def results(self, chunk: Chunk) -> AsyncIterator[tuple[str, Outcome]]:
        for vid, outcome in checkpointed(self._blobs(chunk), chunk.chunk_id).items():
            yield vid, outcome

    async def release(self, chunk: Chunk) -> None:
        """Admit none of the chunk's requests from now on (the deadline guard sends them
        elsewhere); those inside the engine finish and are checkpointed."""
        request_cancel(self._blobs(chunk), chunk.chunk_id, "release")
        if self._runner is not None:
            self._runner.drain_chunk(chunk.chunk_id)

    async def cancel(self, chunk: Chunk) -> None:
        if self._runner is not None:
            self._runner.cancel_chunk(chunk.chunk_id)
        request_cancel(self._blobs(chunk), chunk.chunk_id)

    async def aclose(self) -> None:
        if self._queue is not None:
            await self._queue.aclose()
        if self._runner is not None:
            await asyncio.to_thread(self._runner.close)
