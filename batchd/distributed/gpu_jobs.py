"""The gpu worker's job (distributed mode): run one vLLM chunk on this process's engine.

Several jobs run at once (arq `max_jobs`), all feeding the same engine, so the batch
stays full across chunk boundaries. A job works on its chunk for at most
`GPU_JOB_SLICE_S`, then puts the unadmitted rest back and requeues itself, so a worker
that dies is replaced within one job timeout. Outside the windows a job defers itself
to the next opening; when a window closes it stops admitting, lets the requests inside
the engine finish (they are checkpointed), and defers the rest.

A job runs its chunk under the chunk's lease (`gpu:<chunk_id>`, fenced like a run's
lease): a second job for the chunk skips while the lease is held, and a worker paused
past its lease writes no part or done marker once it wakes (GpuRunner's guard), so it
never records results over those of the worker that took the chunk over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from arq import Retry

from batchd.backends.vllm.backend import next_admission_s, window_gate
from batchd.backends.vllm.runner import GpuRunner
from batchd.config.settings import Settings
from batchd.distributed.leases import lease
from batchd.run.services import Services, open_services
from batchd.state.base import CHUNK_CREATING, CHUNK_SUBMITTED
from batchd.state.redis_store import RedisStore

log = logging.getLogger("batchd.gpu")

GPU_JOB_SLICE_S = 600.0  # a job yields its chunk after this long, then requeues
GPU_JOB_TIMEOUT_S = 1800  # arq reruns a dead worker's job after this (+10 s)
WATCH_INTERVAL_S = 0.5
MAX_DEFER_S = 3600.0  # a deferred job wakes at least this often to look again


async def startup(ctx: dict[str, Any], settings: Settings) -> None:
    cfg = settings.backends.vllm
    ctx["svc"] = open_services(settings)
    ctx["runner"] = GpuRunner(cfg, admitting=window_gate(cfg)) if cfg.enabled else None
    ctx["owner"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def shutdown(ctx: dict[str, Any]) -> None:
    runner: GpuRunner | None = ctx.get("runner")
    if runner is not None:
        await asyncio.to_thread(runner.close)
    svc: Services | None = ctx.get("svc")
    if svc is not None:
        svc.close()


async def gpu_chunk(ctx: dict[str, Any], run_id: str, chunk_id: str) -> str:
    svc: Services = ctx["svc"]
    runner: GpuRunner | None = ctx["runner"]
    if runner is None:
        raise RuntimeError("this gpu worker has no [backends.vllm] model configured")
    chunk = svc.store.get_chunk(chunk_id)
    # `creating`: the coordinator enqueued us and has not recorded it yet
    runnable = (CHUNK_CREATING, CHUNK_SUBMITTED)
    if chunk is None or chunk.state not in runnable or chunk.cancel_reason is not None:
        return "skipped"
    wait_s = next_admission_s(runner.cfg)
    if wait_s > 0:
        log.info("chunk %s waits %.0f s for the next GPU window", chunk_id, wait_s)
        raise Retry(defer=min(wait_s, MAX_DEFER_S))
    model = chunk.model.removeprefix("vllm:")
    if runner.cfg.engine(model) is not None:
        # Start the model's engine before taking the chunk's lease: a start takes minutes
        # and imports vLLM holding the GIL, so a short lease could lapse unrenewed meanwhile.
        await asyncio.to_thread(runner.feeder_for(model).tokenizer)
    store = svc.store
    assert isinstance(store, RedisStore)
    async with lease(store, f"gpu:{chunk_id}", ctx["owner"], svc.settings.lease_ttl_s) as fence:
        if fence is None:
            return "skipped"  # another gpu worker runs this chunk now
        return await _run_chunk(
            svc,
            runner,
            run_id,
            chunk_id,
            model,
            chunk.path,
            lambda: store.lease_held(fence),
        )


async def _run_chunk(
    svc: Services,
    runner: GpuRunner,
    run_id: str,
    chunk_id: str,
    model: str,
    path: str,
    guard: Callable[[], bool],
) -> str:
    """Run the chunk on the engine of its model (a worker may serve several)."""
    job = await asyncio.to_thread(
        runner.start_chunk, chunk_id, model, path, svc.blobs(run_id), guard
    )
    started = time.monotonic()
    while not job.finished.is_set():
        await asyncio.sleep(WATCH_INTERVAL_S)
        if not await asyncio.to_thread(guard):  # e.g. woken from a pause past the lease
            runner.lose(chunk_id)
            break
        closing = not runner.admitting()
        if job.state == "running" and (closing or time.monotonic() - started > GPU_JOB_SLICE_S):
            runner.release(chunk_id)
            await asyncio.to_thread(job.idle.wait)
            if job.state == "paused":
                raise Retry(defer=max(next_admission_s(runner.cfg), 0.1))
    return job.state
