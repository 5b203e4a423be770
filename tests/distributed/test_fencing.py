"""Fencing: a coordinator paused past its run lease buys nothing and records nothing
(real coordinators, real redis-server, the OpenAI emulator)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import chat, write_jsonl
from tests.support.stack import Stack

HANG_GUARD_S = 60


@pytest.fixture
def stack(tmp_path: Path, emulator: OpenAIBatchEmulator) -> Iterator[Stack]:
    s = Stack(tmp_path, emulator)
    yield s
    for p in s.coordinators:  # a test that fails while one is stopped must not leave it so
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
    s.stop()


def _wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {what}")
        time.sleep(0.05)


def test_a_coordinator_paused_in_a_create_retry_never_creates(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    # The vendor answers the first create 429 with Retry-After: 4, so the create sits in its
    # retry wait; the lease holder is paused there 12 s, far past lease_ttl_s = 3.
    emulator.faults.rate_limit_creates = 1
    emulator.faults.create_retry_after_s = 4
    env = {"BATCHD_LEASE_TTL_S": "3", "BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "5"}
    coordinators = [stack.start_coordinator(**env), stack.start_coordinator(**env)]
    n = 10
    src = write_jsonl(tmp_path / "p.jsonl", [chat(f"p{i}", f"p request {i}") for i in range(n)])
    run_id = stack.submit_no_wait(src, **env)
    _wait_for(lambda: emulator.faults.rate_limit_creates == 0, "no create was rate limited")
    holder = stack.lease_holder_pid(f"run:{run_id}")
    paused = next(p for p in coordinators if p.pid == holder)
    states = {c.state for c in stack.store().chunks(run_id)}
    assert "creating" in states, states
    os.kill(paused.pid, signal.SIGSTOP)
    time.sleep(12)  # the other coordinator takes the run over meanwhile
    os.kill(paused.pid, signal.SIGCONT)
    log_path = tmp_path / f"coordinator-{coordinators.index(paused)}.log"
    # Woken, its retry wait over, it checks its lease before sending the create again.
    _wait_for(lambda: "stopping this job" in log_path.read_text(), "the woken one never stopped")
    stack.wait_done(run_id)
    per_chunk = {
        k: v
        for k, v in emulator.batch_count_by_metadata("batchd_chunk").items()
        if k.startswith(run_id)
    }
    assert len(per_chunk) == 2 and set(per_chunk.values()) == {1}, per_chunk
    billed = Counter(r["body"]["messages"][0]["content"] for r in emulator.requests_seen())
    assert billed == {f"p request {i}": 1 for i in range(n)}
    rows = stack.rows(run_id)
    assert [r["custom_id"] for r in rows] == [f"p{i}" for i in range(n)]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert "lost lease" in log_path.read_text()
    assert paused.poll() is None  # it lives on, working on what it leases next
