"""Distributed mode: the pipeline steps as jobs a coordinator (arq worker) runs.

A cron tick enqueues, for every active run, the job its state needs (ingest, dispatch,
poll, finalize). A job first takes the run's lease in Redis, so however many
coordinators run, one works on a given run at a time and no step runs twice; a killed
coordinator's lease expires and another takes over from the state in the store.
The steps themselves are the same functions embedded mode runs.

Fencing: each acquisition of a lease has a token that grows with every acquisition, and a
job's steps see the store through it (state.fencing.FencedStore). A coordinator that lost
its lease (paused past `lease_ttl_s`, cut off from Redis) has every state change refused
and checks the lease immediately before each vendor call that spends money, so it never
creates a batch the new holder may create too; the job stops with `lost_lease`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from batchd.config.settings import load_settings
from batchd.distributed.leases import lease
from batchd.errors import BatchdError
from batchd.run.cancel import CANCEL_POLL_S
from batchd.run.embed_step import after_dispatch
from batchd.run.pipeline import dispatch_round, finalize_step, ingest_run
from batchd.run.services import Services, open_services
from batchd.state.base import (
    CHUNK_CREATING,
    CHUNK_ENDED,
    CHUNK_PENDING,
    CHUNK_SUBMITTED,
    RUN_DISPATCHING,
    RUN_FINALIZING,
    RUN_INGESTING,
    Run,
    StaleLease,
)
from batchd.state.fencing import FencedStore
from batchd.state.redis_store import RedisStore
from batchd.triggers import nightly
from batchd.triggers.drop_folder import watch_once

log = logging.getLogger("batchd.coordinator")

QUEUE = "batchd:coordinator"
HEALTH_KEY = "batchd:coordinator:health-check"
#: A queued step older than this is an orphan: a coordinator killed while running it left it
#: in the queue, marked in progress (arq keeps that mark for job_timeout, 24 h). arq reads
#: only the oldest `queue_read_limit` (100) entries, so enough orphans would hide every new
#: job and stall the cluster. The tick re-derives every needed step from the store each
#: second under new ids, so an old entry is never the only copy of work to do. The sweep
#: runs beside the queue (a task of each coordinator), since a stalled queue runs no cron job.
ORPHAN_AFTER_S = 15.0
SWEEP_EVERY_S = 5.0
DISPATCH_STATES = (CHUNK_PENDING, CHUNK_CREATING)
POLL_STATES = (CHUNK_SUBMITTED, CHUNK_ENDED)


async def startup(ctx: dict[str, Any]) -> None:
    settings = load_settings()
    if not settings.redis_url:
        raise BatchdError(
            "The coordinator needs BATCHD_REDIS_URL.",
            "Set it to the Redis every batchd process shares.",
        )
    ctx["svc"] = open_services(settings)
    ctx["owner"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    ctx["sweeper"] = asyncio.create_task(_sweep_forever(ctx["redis"]))


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["sweeper"].cancel()
    svc: Services = ctx["svc"]
    await svc.aclose()
    svc.close()


@asynccontextmanager
async def run_lease(ctx: dict[str, Any], run_id: str) -> AsyncIterator[Services | None]:
    """The services for working on the run under its lease, or None if another holds it.

    Every write through the yielded services' store carries the lease's fence.
    """
    svc: Services = ctx["svc"]
    store = svc.store
    assert isinstance(store, RedisStore)
    async with lease(store, f"run:{run_id}", ctx["owner"], svc.settings.lease_ttl_s) as fence:
        if fence is None:
            yield None
            return
        fenced = copy.copy(svc)
        fenced.store = FencedStore(store, fence)
        yield fenced


def _lost(run_id: str, exc: StaleLease) -> str:
    log.error("run %s: %s; stopping this job, the lease's new holder carries on", run_id, exc)
    return "lost_lease"


async def _whole_run_step(
    ctx: dict[str, Any], run_id: str, state: str, step: Callable[[Services, Run], Any]
) -> str:
    """Run a CPU-bound step of a run in `state` in a thread (the loop keeps the health key)."""
    async with run_lease(ctx, run_id) as svc:
        run = svc.store.get_run(run_id) if svc else None
        if svc is None or run is None or run.state != state:
            return "skipped"
        try:
            await asyncio.to_thread(step, svc, run)
        except StaleLease as exc:
            return _lost(run_id, exc)
    await enqueue_next(ctx["redis"], ctx["svc"], run_id)
    return "done"


async def ingest_job(ctx: dict[str, Any], run_id: str) -> str:
    return await _whole_run_step(ctx, run_id, RUN_INGESTING, ingest_run)


async def finalize_job(ctx: dict[str, Any], run_id: str) -> str:
    return await _whole_run_step(ctx, run_id, RUN_FINALIZING, finalize_step)


async def _chunk_job(ctx: dict[str, Any], run_id: str, states: tuple[str, ...]) -> str:
    async with run_lease(ctx, run_id) as svc:
        run = svc.store.get_run(run_id) if svc else None
        if svc is None or run is None or run.state != RUN_DISPATCHING:
            return "skipped"
        try:
            if await dispatch_round(svc, run, states):  # or back to ingest (run.embed_step)
                svc.store.update_run(run_id, state=after_dispatch(run))
                await enqueue_next(ctx["redis"], svc, run_id)
        except StaleLease as exc:
            return _lost(run_id, exc)
        except BatchdError as exc:  # a preflight refused (kept on the run), or a refused key
            log.error("run %s: %s %s", run_id, exc.message, exc.hint)
            return "blocked"
        return "done"


async def dispatch_job(ctx: dict[str, Any], run_id: str) -> str:
    """Create vendor batches for pending chunks (and reconcile ones left in `creating`)."""
    return await _chunk_job(ctx, run_id, DISPATCH_STATES)


async def poll_job(ctx: dict[str, Any], run_id: str) -> str:
    """Poll submitted chunks; collect the ended ones (and resubmit what may be retried)."""
    return await _chunk_job(ctx, run_id, POLL_STATES)


def next_jobs(run: Run, poll_interval_s: float, now: float) -> list[tuple[str, str]]:
    """(job name, job id) of the step a run needs next; ids repeat within a time slot, so
    the cron tick and a step enqueueing its successor never queue the same step twice."""
    if run.state == RUN_INGESTING:
        names = [("ingest_job", 1.0)]
    elif run.state == RUN_DISPATCHING:
        # a cancel is acted on at once, not at the next poll slot
        poll_s = min(poll_interval_s, CANCEL_POLL_S) if run.cancel_requested else poll_interval_s
        names = [("dispatch_job", 1.0), ("poll_job", poll_s)]
    elif run.state == RUN_FINALIZING:
        names = [("finalize_job", 1.0)]
    else:
        names = []
    return [(name, f"{name}:{run.run_id}:{int(now // max(slot_s, 1.0))}") for name, slot_s in names]


async def enqueue_next(redis: Any, svc: Services, run_id: str) -> int:
    run = svc.store.get_run(run_id)
    if run is None:
        return 0
    n = 0
    for name, job_id in next_jobs(run, svc.settings.poll_interval_s, time.time()):
        job = await redis.enqueue_job(name, run_id, _job_id=job_id, _queue_name=QUEUE)
        n += job is not None
    return n


async def kick(redis_url: str, svc: Services, run_id: str) -> None:
    """From the CLI: queue a new run's first step now instead of at the next cron tick."""
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE)
    try:
        await enqueue_next(pool, svc, run_id)
    finally:
        await pool.aclose()


async def sweep_orphans(redis: Any, now_s: float) -> int:
    """Drop queue entries older than ORPHAN_AFTER_S (see there); how many were dropped."""
    cutoff_ms = (now_s - ORPHAN_AFTER_S) * 1000
    dropped = int(await redis.zremrangebyscore(QUEUE, "-inf", cutoff_ms))
    if dropped:
        log.warning("dropped %d orphaned step(s) left queued by a killed coordinator", dropped)
    return dropped


async def _sweep_forever(redis: Any) -> None:
    while True:
        try:
            await sweep_orphans(redis, time.time())
        except Exception as exc:  # Redis restarting: try again at the next round
            log.warning("orphan sweep: %s", exc)
        await asyncio.sleep(SWEEP_EVERY_S)


async def tick(ctx: dict[str, Any]) -> int:
    """Cron: enqueue the next step of every active run (deduplicated per time slot)."""
    svc: Services = ctx["svc"]
    store = svc.store
    assert isinstance(store, RedisStore)
    return sum([await enqueue_next(ctx["redis"], svc, run_id) for run_id in store.active_runs()])


async def drop_tick(ctx: dict[str, Any]) -> int:
    """Cron: scan the drop folder ([s3] inbox) every watch_interval_s; claim, start, enqueue."""
    from batchd.run.identity import run_options

    svc: Services = ctx["svc"]
    s3 = svc.settings.s3
    now = time.monotonic()
    if not s3.inbox or now - ctx.get("last_drop_scan_s", -1e18) < s3.watch_interval_s:
        return 0
    ctx["last_drop_scan_s"] = now
    output = s3.inbox_output or svc.settings.output
    try:
        runs = await asyncio.to_thread(
            watch_once, svc, s3.inbox, output, run_options(svc.settings), None, ctx["owner"]
        )
    except BatchdError as exc:  # S3 unreachable, bucket gone...: say so, try next time
        log.error("drop folder %s: %s", s3.inbox, exc)
        return 0
    for run in runs:
        await enqueue_next(ctx["redis"], svc, run.run_id)
    return len(runs)


async def jobs_tick(ctx: dict[str, Any]) -> int:
    """Cron: fire the nightly job specs that are due (each scheduled time once, cluster-wide)."""
    svc: Services = ctx["svc"]
    try:
        specs = nightly.load_specs(svc.settings.jobs_dir)
        runs = await asyncio.to_thread(nightly.tick, svc, specs, time.time(), ctx["owner"])
    except BatchdError as exc:
        log.error("job specs: %s", exc)
        return 0
    for run in runs:
        await enqueue_next(ctx["redis"], svc, run.run_id)
    return len(runs)
