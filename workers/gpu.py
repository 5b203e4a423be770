"""The GPU worker: `arq workers.gpu.WorkerSettings`, one process per GPU node.

It keeps one vLLM engine warm (started at the first chunk) and runs the `gpu_chunk`
jobs the coordinators enqueue for self-hosted chunks, inside the `[backends.vllm]`
windows. Health: `arq workers.gpu.WorkerSettings --check`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq import func
from arq.connections import RedisSettings

from batchd.backends.vllm.backend import GPU_QUEUE
from batchd.config.settings import load_settings
from batchd.distributed.gpu_jobs import GPU_JOB_TIMEOUT_S, gpu_chunk, shutdown, startup

_settings = load_settings()


async def capabilities(ctx: dict[str, Any]) -> dict[str, Any]:
    """What this GPU worker can run."""
    try:
        import vllm  # noqa: F401

        has_vllm = True
    except ImportError:
        has_vllm = False
    cfg = _settings.backends.vllm
    engines = [
        {"model": e.name, "kind": e.kind, "tool_parser": e.tool_parser} for e in cfg.engines()
    ]
    return {"vllm_installed": has_vllm, "engines": engines}


async def _startup(ctx: dict[str, Any]) -> None:
    await startup(ctx, _settings)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [
        capabilities,
        func(gpu_chunk, timeout=GPU_JOB_TIMEOUT_S, max_tries=10_000),
    ]
    on_startup = _startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(_settings.redis_url or "redis://127.0.0.1:6379")
    queue_name = GPU_QUEUE
    health_check_key = "batchd:gpu:health-check"
    health_check_interval = 5
    max_jobs = 4
    keep_result = 60
