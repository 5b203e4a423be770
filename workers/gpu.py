"""The GPU worker: `arq workers.gpu.WorkerSettings`, one process per GPU node.

It listens on the GPU queue that self-hosted chunks go to. The vLLM engine itself
arrives with the vLLM worker work; until then this worker answers the queue and the
health check (`arq workers.gpu.WorkerSettings --check`), and reports what it can run.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq.connections import RedisSettings

from batchd.settings import load_settings

_settings = load_settings()


async def capabilities(ctx: dict[str, Any]) -> dict[str, Any]:
    """What this GPU worker can run; an empty engine list until vLLM is configured."""
    try:
        import vllm  # noqa: F401

        has_vllm = True
    except ImportError:
        has_vllm = False
    return {"vllm_installed": has_vllm, "engines": []}


class WorkerSettings:
    functions: ClassVar[list[Any]] = [capabilities]
    redis_settings = RedisSettings.from_dsn(_settings.redis_url or "redis://127.0.0.1:6379")
    queue_name = "batchd:gpu"
    health_check_key = "batchd:gpu:health-check"
    health_check_interval = 5
    max_jobs = 4
    keep_result = 60
