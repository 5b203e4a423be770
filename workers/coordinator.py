"""The coordinator (CPU) worker: `arq workers.coordinator.WorkerSettings`.

Runs the pipeline steps of every run (ingest, dispatch, poll, finalize) from Redis;
start as many as you like, on as many machines as reach the same Redis and workdir.
Health: `arq workers.coordinator.WorkerSettings --check` exits 0 while one is alive.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings

from batchd.config.settings import load_settings
from batchd.distributed import coordinator as steps

_settings = load_settings()


class WorkerSettings:
    functions: ClassVar[list[Any]] = [
        steps.ingest_job,
        steps.dispatch_job,
        steps.poll_job,
        steps.finalize_job,
    ]
    cron_jobs: ClassVar[list[Any]] = [
        cron(steps.tick, second=set(range(60)), microsecond=0, unique=True),
        # drop folder ([s3] inbox; scans every s3.watch_interval_s) and nightly job specs
        cron(steps.drop_tick, second=set(range(60)), microsecond=0, unique=True),
        cron(steps.jobs_tick, second={0, 30}, microsecond=0, unique=True),
    ]
    on_startup = steps.startup
    on_shutdown = steps.shutdown
    redis_settings = RedisSettings.from_dsn(_settings.redis_url or "redis://127.0.0.1:6379")
    queue_name = steps.QUEUE
    health_check_key = steps.HEALTH_KEY
    health_check_interval = 5
    max_jobs = 20
    job_timeout = 24 * 3600  # ingest of a huge file may take a while; its lease is renewed
    keep_result = 5
    max_tries = 1  # steps retry themselves with backoff (see batchd.dispatch.step_failed)
