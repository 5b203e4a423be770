"""Distributed mode (real redis-server, real coordinator processes): the enqueued-token cap is
learned and kept, and the deadline guard releases GPU work no gpu worker ran to a vendor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd.planning.observations import Observations
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.run.test_gpu_release import _config
from tests.run.test_gpu_release import _lines as alias_lines
from tests.run.test_quota import MODEL, _failed_for_cap, _lines
from tests.support.helpers import write_jsonl
from tests.support.stack import Stack


@pytest.fixture
def stack(tmp_path: Path, emulator: OpenAIBatchEmulator) -> Iterator[Stack]:
    s = Stack(tmp_path, emulator)
    yield s
    s.stop()


def test_the_cap_is_learned_and_kept_by_the_coordinators(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.enqueued_token_limits[MODEL] = 400
    stack.start_coordinator()
    src = write_jsonl(tmp_path / "q.jsonl", _lines("d", 12))
    done = stack.cli(
        "submit", str(src), "--output", str(stack.out), BATCHD_OPENAI_MAX_LINES_PER_CHUNK="4"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = next(p.name for p in stack.out.iterdir())
    assert Counter(r["status"] for r in stack.rows(run_id)) == {"succeeded": 12}
    assert _failed_for_cap(emulator)  # it was refused, then kept under the cap
    assert emulator.peak_enqueued_tokens[MODEL] <= 400
    learned = Observations(stack.store().observations()).enqueued_token_limit("openai", MODEL)
    assert learned == 400


def test_gpu_work_no_worker_ran_is_released_to_a_vendor(
    stack: Stack, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    _config(tmp_path)  # the window opens in 10 minutes; no gpu worker runs anyway
    stack.start_coordinator()
    src = write_jsonl(tmp_path / "in.jsonl", alias_lines(4))
    done = stack.cli(
        "submit", str(src), "--output", str(stack.out), "--within", "20m",
        "--guard-margin-s", "1190",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = next(p.name for p in stack.out.iterdir())
    rows = stack.rows(run_id)
    assert Counter(r["status"] for r in rows) == {"succeeded": 4}
    assert {(r["backend"], r["tier"]) for r in rows} == {("openai", "flex")}
    assert len(emulator.sync_calls) == 4 and not emulator.batches()
    gpu = [c for c in stack.store().chunks(run_id) if c.backend == "vllm"]
    assert len(gpu) == 1 and gpu[0].cancel_reason == "guard"  # it was on the gpu queue
