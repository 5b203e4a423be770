"""Every step ends (embedded mode): a vendor that fails every create does not keep a run
alive; failures are counted with backoff, and the deadline ends what was never sent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

ALWAYS = 10**9  # the vendor answers every create this way
HANG_GUARD_S = 120


def _src(tmp_path: Path, n: int) -> Path:
    return write_jsonl(tmp_path / "jobs.jsonl", [chat(f"e{i}", f"request {i}") for i in range(n)])


def test_creates_failing_500_end_failed_with_the_reason(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.server_error_creates = ALWAYS
    done = batchd.submit(
        _src(tmp_path, 6),
        timeout=HANG_GUARD_S,
        BATCHD_OPENAI_MAX_LINES_PER_CHUNK="4",
        BATCHD_MAX_STEP_FAILURES="3",
        BATCHD_STEP_RETRY_BASE_S="0.1",
    )
    assert done.returncode == 3, done.stderr
    rows = batchd.results()
    assert [r["custom_id"] for r in rows] == [f"e{i}" for i in range(6)]
    assert {r["status"] for r in rows} == {"failed"}
    for r in rows:
        assert r["error_type"] == "step_failed"
        message = r["error_message"]
        assert "3 failed attempts of step 'creating'" in message, message
        assert "500" in message and "TransientBackendError" in message, message
    assert emulator.batches() == []  # nothing was ever created, so nothing to pay
    # Each try of each chunk was one create (no blind retries of a 500 inside a try).
    assert ALWAYS - emulator.faults.server_error_creates == 2 * 3


def test_within_deadline_creates_failing_end_expired(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.faults.server_error_creates = ALWAYS
    done = batchd.submit(
        _src(tmp_path, 3),
        "--within",
        "8s",
        timeout=HANG_GUARD_S,
        BATCHD_MAX_STEP_FAILURES="1000",  # failures alone would never end it
        BATCHD_STEP_RETRY_BASE_S="0.2",
        BATCHD_STEP_RETRY_MAX_S="60",  # a backoff longer than the time left is cut at it
        BATCHD_PLANNER_TURNAROUND_S="0",  # trust the vendor to finish in time
        BATCHD_FALLBACK="none",  # no deadline guard: unsent lines end expired
    )
    assert done.returncode == 3, done.stderr
    rows = batchd.results()
    assert Counter(r["status"] for r in rows) == {"expired": 3}
    assert {r["error_message"] for r in rows} == {"not sent before the run's deadline"}
    assert emulator.batches() == []
    assert ALWAYS - emulator.faults.server_error_creates >= 2  # it kept trying until then


def test_polls_failing_in_a_row_end_failed_and_an_answer_clears_the_count(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    env = {
        "BATCHD_OPENAI_MAX_RETRIES": "0",  # each failed poll is one failed step
        "BATCHD_MAX_STEP_FAILURES": "3",
        "BATCHD_STEP_RETRY_BASE_S": "0.05",
    }
    # Two failed polls, then answers: the count is cleared, the run succeeds.
    emulator.faults.server_error_retrieves = 2
    ok = batchd.submit(_src(tmp_path, 2), timeout=HANG_GUARD_S, **env)
    assert ok.returncode == 0, ok.stderr
    assert {r["status"] for r in batchd.results()} == {"succeeded"}
    # Polls failing for ever: after 3 in a row the lines end failed, the batch is cancelled.
    emulator.faults.server_error_retrieves = ALWAYS
    src = write_jsonl(tmp_path / "more.jsonl", [chat("m", "another request")])
    failed = batchd.submit(src, timeout=HANG_GUARD_S, **env)
    assert failed.returncode == 3, failed.stderr
    rows = [r for d in batchd.run_dirs() for r in batchd.results(d) if r["custom_id"] == "m"]
    assert len(rows) == 1
    assert rows[0]["status"] == "failed" and rows[0]["error_type"] == "step_failed"
    assert "3 failed attempts of step 'submitted'" in rows[0]["error_message"]
    assert emulator.batches()[-1]["status"] == "cancelling"
