"""Distributed mode with a real redis-server and real coordinator processes (arq workers)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from batchd.distributed.coordinator import QUEUE
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import chat, write_jsonl
from tests.support.stack import Stack


@pytest.fixture
def stack(tmp_path: Path, emulator: OpenAIBatchEmulator) -> Iterator[Stack]:
    s = Stack(tmp_path, emulator)
    yield s
    s.stop()


def _lines(n: int, tag: str = "r") -> list[dict[str, Any]]:
    return [chat(f"{tag}{i}", f"{tag} request {i}") for i in range(n)]


def _assert_exactly_once(
    stack: Stack, emulator: OpenAIBatchEmulator, run_id: str, n: int, tag: str = "r"
) -> None:
    rows = stack.rows(run_id)
    assert [r["custom_id"] for r in rows] == [f"{tag}{i}" for i in range(n)]
    assert {r["status"] for r in rows} == {"succeeded"}
    per_chunk = {
        k: v
        for k, v in emulator.batch_count_by_metadata("batchd_chunk").items()
        if k.startswith(run_id)
    }
    assert per_chunk and set(per_chunk.values()) == {1}, per_chunk
    sent = Counter(
        r["custom_id"]
        for r in emulator.requests_seen()
        if r["body"]["messages"][0]["content"].startswith(f"{tag} ")
    )
    assert len(sent) == n and set(sent.values()) == {1}


def test_submit_waits_no_wait_and_other_machines(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    stack.start_coordinator()
    src = write_jsonl(tmp_path / "a.jsonl", _lines(6))
    waited = stack.cli("submit", str(src), "--output", str(stack.out))
    assert waited.returncode == 0, waited.stderr
    run_id = next(p.name for p in stack.out.iterdir())
    _assert_exactly_once(stack, emulator, run_id, 6)
    work = tmp_path / "work" / run_id
    assert (work / "lines.parquet").exists()  # the run's workdir, on the shared folder
    assert not (work / "input").exists() and not (work / "chunks").exists()  # prompts gone
    other = str(tmp_path / "laptop")
    status = stack.cli("status", run_id, home=other)
    assert status.returncode == 0 and "succeeded 6" in status.stdout
    report = stack.cli("report", run_id, home=other)
    assert report.returncode == 0 and "gpt-5.4-nano" in report.stdout
    src2 = write_jsonl(tmp_path / "b.jsonl", _lines(3, tag="n"))
    run2 = stack.submit_no_wait(src2)
    assert run2.startswith("run-") and run2 != run_id
    stack.wait_done(run2)
    assert len(stack.rows(run2)) == 3
    health = subprocess.run(
        [sys.executable, "-m", "arq", "workers.coordinator.WorkerSettings", "--check"],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert health.returncode == 0, health.stderr
    gpu = subprocess.run(
        [sys.executable, "-m", "arq", "workers.gpu.WorkerSettings", "--check"],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert gpu.returncode == 1  # no GPU worker running: the check says so


def _leave_orphans(redis_url: str, n: int, age_s: float) -> None:
    """What a SIGKILLed coordinator leaves per step it was running: the job, its queue
    entry and arq's in-progress mark (kept for job_timeout + 10 s, about 24 h)."""
    from arq import create_pool
    from arq.connections import RedisSettings

    async def leave() -> None:
        pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE)
        try:
            for i in range(n):
                job_id = f"poll_job:run-of-a-dead-coordinator:{i}"
                await pool.enqueue_job("poll_job", "run-gone", _job_id=job_id, _queue_name=QUEUE)
                await pool.zadd(QUEUE, {job_id: (time.time() - age_s) * 1000 + i})
                await pool.psetex(f"arq:in-progress:{job_id}", 24 * 3600 * 1000, b"1")
        finally:
            await pool.aclose()

    asyncio.run(leave())


def test_steps_orphaned_by_killed_coordinators_never_stall_new_runs(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    # arq reads only the oldest 100 queue entries: 150 orphans would hide every new step.
    _leave_orphans(stack.redis.url, 150, age_s=3600)
    stack.start_coordinator()
    run_id = stack.submit_no_wait(write_jsonl(tmp_path / "o.jsonl", _lines(5)))
    stack.wait_done(run_id)
    _assert_exactly_once(stack, emulator, run_id, 5)
    queued = redis.Redis.from_url(stack.redis.url).zrange(QUEUE, 0, -1)
    assert not [j for j in queued if b"dead-coordinator" in j]


def test_twenty_kills_of_the_coordinator_lose_and_repay_nothing(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    n = 40
    src = write_jsonl(tmp_path / "k.jsonl", _lines(n))
    current: dict[str, subprocess.Popen[bytes]] = {}
    killed_in_create = threading.Event()

    def kill_during_create(_batch: dict[str, Any]) -> None:
        if len(emulator.batches()) == 3:  # between the third vendor create and its record
            emulator.faults.after_create = None
            current["proc"].kill()
            killed_in_create.set()

    emulator.faults.after_create = kill_during_create
    env = {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "4"}
    run_id = stack.submit_no_wait(src, **env)
    rnd = random.Random(99)

    def one_life(low_s: float, high_s: float) -> None:
        current["proc"] = stack.start_coordinator(**env)
        time.sleep(rnd.uniform(low_s, high_s))
        if current["proc"].poll() is None:
            current["proc"].kill()
        current["proc"].wait()

    # Phase 1: 20 kills while the vendor cannot finish (it moves on at kills 7 and 14):
    # ingest, create (one kill falls between a create and its record) and polling.
    for kill in range(1, 21):
        one_life(0.3, 2.5)
        if kill in (7, 14):
            emulator.advance_all()
    assert stack.store().get_run(run_id).state != "done"
    # Phase 2: the vendor finishes; more kills while chunks are collected and finalized.
    emulator.set_step_mode(manual=False)
    for _ in range(4):
        if stack.store().get_run(run_id).state == "done":
            break
        one_life(0.2, 1.2)
    stack.start_coordinator(**env)
    stack.wait_done(run_id)
    assert killed_in_create.is_set()
    _assert_exactly_once(stack, emulator, run_id, n)
    assert (
        len([k for k in emulator.batch_count_by_metadata("batchd_chunk") if k.startswith(run_id)])
        == 10
    )


def test_random_pauses_and_kills_of_two_coordinators_pay_once(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    """SIGSTOP/SIGCONT (often of the run's lease holder, often past lease_ttl_s) and kill -9
    at random points of two coordinators: every chunk one batch, every line billed once."""
    emulator.polls_per_step = 3
    emulator.faults.rate_limit_creates = 4  # some creates wait in their retry when paused
    emulator.faults.create_retry_after_s = 1
    n = 40
    env = {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "4"}  # 10 chunks
    ttl_s = float(stack.env["BATCHD_LEASE_TTL_S"])
    procs = [stack.start_coordinator(**env), stack.start_coordinator(**env)]
    run_id = stack.submit_no_wait(write_jsonl(tmp_path / "s.jsonl", _lines(n)), **env)
    rnd = random.Random(14)
    holder_paused_past_lease = 0
    try:
        for action in range(14):
            if stack.store().get_run(run_id).state == "done":
                break
            time.sleep(rnd.uniform(0.1, 1.2))
            holder = stack.lease_holder_pid(f"run:{run_id}")
            held = [i for i, p in enumerate(procs) if p.pid == holder]
            i = held[0] if held and rnd.random() < 0.7 else rnd.randrange(len(procs))
            if action % 5 == 4:  # kill -9, and the supervisor starts a new one
                procs[i].kill()
                procs[i].wait()
                procs[i] = stack.start_coordinator(**env)
                continue
            pause_s = rnd.uniform(0.3, 3 * ttl_s)
            os.kill(procs[i].pid, signal.SIGSTOP)
            try:
                time.sleep(pause_s)
            finally:
                os.kill(procs[i].pid, signal.SIGCONT)
            holder_paused_past_lease += bool(held) and held[0] == i and pause_s > ttl_s
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
    stack.wait_done(run_id, timeout_s=180)
    assert holder_paused_past_lease >= 1  # the fencing path was exercised, not just kills
    _assert_exactly_once(stack, emulator, run_id, n)
    per_chunk = emulator.batch_count_by_metadata("batchd_chunk")
    assert len([k for k in per_chunk if k.startswith(run_id)]) == 10


def test_redis_restart_mid_run_loses_nothing(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "r.jsonl", _lines(8))
    stack.start_coordinator()
    run_id = stack.submit_no_wait(src, BATCHD_OPENAI_MAX_LINES_PER_CHUNK="4")
    deadline = time.monotonic() + 30
    while len(emulator.batches()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(emulator.batches()) == 2
    stack.redis.restart()  # SIGTERM (AOF flushed), then start on the same port and data dir
    emulator.set_step_mode(manual=False)
    # The coordinator may die of the lost connection, at once or at its next Redis call;
    # the supervisor (honcho, systemd) restarts it whenever it does.
    stack.wait_done(run_id, supervise=True)
    _assert_exactly_once(stack, emulator, run_id, 8)


def test_two_coordinators_never_run_a_step_twice(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.polls_per_step = 2
    stack.start_coordinator()
    stack.start_coordinator()
    env = {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "3"}
    runs = [
        stack.submit_no_wait(write_jsonl(tmp_path / f"{t}.jsonl", _lines(9, tag=t)), **env)
        for t in ("a", "b", "c")
    ]
    for run_id, tag in zip(runs, ("a", "b", "c"), strict=True):
        stack.wait_done(run_id)
        _assert_exactly_once(stack, emulator, run_id, 9, tag=tag)
    logs = "".join((stack.tmp / f"coordinator-{i}.log").read_text() for i in range(2))
    assert "ingest_job" in logs
    worked = [
        sum(
            f"{job}(" in (stack.tmp / f"coordinator-{i}.log").read_text()
            for job in ("ingest_job", "dispatch_job", "poll_job", "finalize_job")
        )
        for i in range(2)
    ]
    assert all(worked), worked  # both coordinators took jobs


def test_a_failing_step_is_retried_then_ends_lines_failed(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.corrupt_outputs = 1
    env = {"BATCHD_MAX_STEP_FAILURES": "3", "BATCHD_STEP_RETRY_BASE_S": "0.2"}
    stack.start_coordinator(**env)
    run_id = stack.submit_no_wait(write_jsonl(tmp_path / "f.jsonl", _lines(3)), **env)
    run = stack.wait_done(run_id)
    assert run.outcome == "finished_with_failures"
    rows = stack.rows(run_id)
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert all(
        r["error_type"] == "step_failed" and "3 failed attempts" in r["error_message"] for r in rows
    )


def test_creates_failing_500_end_failed_with_the_reason(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.server_error_creates = 10**9  # every create, for ever
    env = {"BATCHD_MAX_STEP_FAILURES": "3", "BATCHD_STEP_RETRY_BASE_S": "0.1"}
    stack.start_coordinator(**env)
    run_id = stack.submit_no_wait(write_jsonl(tmp_path / "e.jsonl", _lines(3)), **env)
    run = stack.wait_done(run_id)
    assert run.outcome == "finished_with_failures"
    rows = stack.rows(run_id)
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert all(
        r["error_type"] == "step_failed"
        and "3 failed attempts of step 'creating'" in r["error_message"]
        and "500" in r["error_message"]
        for r in rows
    ), rows
    assert emulator.batches() == []


def test_cancel_from_another_machine(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    stack.start_coordinator()
    run_id = stack.submit_no_wait(write_jsonl(tmp_path / "c.jsonl", _lines(4)))
    deadline = time.monotonic() + 30
    while not emulator.batches() and time.monotonic() < deadline:
        time.sleep(0.1)
    cancel = subprocess.Popen(
        [sys.executable, "-m", "batchd.cli", "cancel", run_id],
        env={**stack.env, "BATCHD_HOME": str(tmp_path / "laptop")},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while time.monotonic() < deadline and {b["status"] for b in emulator.batches()} != {
        "cancelling"
    }:
        time.sleep(0.1)
    emulator.advance_all()
    _, err = cancel.communicate(timeout=60)
    assert cancel.returncode == 4, err
    assert Counter(r["status"] for r in stack.rows(run_id)) == {"succeeded": 2, "canceled": 2}


def test_gpu_worker_health_check(stack: Stack) -> None:
    log = open(stack.tmp / "gpu.log", "wb")  # noqa: SIM115
    gpu = subprocess.Popen(
        [sys.executable, "-m", "arq", "workers.gpu.WorkerSettings"],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.coordinators.append(gpu)  # stopped with the stack
    check = [sys.executable, "-m", "arq", "workers.gpu.WorkerSettings", "--check"]
    deadline = time.monotonic() + 30
    rc = 1
    while rc != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        rc = subprocess.run(check, env=stack.env, capture_output=True).returncode
    assert rc == 0
