"""Crash safety and cancel: kill -9 at any point, resume, and never pay for a chunk twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl


def _lines(n: int) -> list[dict[str, Any]]:
    return [
        chat(f"k{i}", f"request number {i}", model=("gpt-5.4-nano", "gpt-5.4-mini")[i % 2])
        for i in range(n)
    ]


def _assert_complete_once(batchd: Batchd, emulator: OpenAIBatchEmulator, n: int) -> None:
    rows = batchd.results()
    assert [r["custom_id"] for r in rows] == [f"k{i}" for i in range(n)]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all(r["output_text"] == f"echo: request number {i}" for i, r in enumerate(rows))
    per_chunk = emulator.batch_count_by_metadata("batchd_chunk")
    assert per_chunk and set(per_chunk.values()) == {1}, per_chunk
    sent = Counter(r["custom_id"] for r in emulator.requests_seen())
    assert len(sent) == n and set(sent.values()) == {1}


def test_kill_between_vendor_create_and_record(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(6))
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_client(_batch: dict[str, Any]) -> None:
        emulator.faults.after_create = None
        os.kill(victim["proc"].pid, signal.SIGKILL)

    emulator.faults.after_create = kill_client
    victim["proc"] = batchd.popen("submit", str(src), "--output", str(batchd.out))
    victim["proc"].wait(timeout=60)
    assert victim["proc"].returncode == -signal.SIGKILL
    assert len(emulator.batches()) == 1  # the vendor has a batch the client never recorded
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    _assert_complete_once(batchd, emulator, 6)


def test_random_kills_then_resume(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.polls_per_step = 12
    n = 40
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(n))
    rnd = random.Random(1234)
    env = {"BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "4", "BATCHD_POLL_INTERVAL_S": "0.05"}
    kills = 0
    for _ in range(12):
        proc = batchd.popen("submit", str(src), "--output", str(batchd.out), **env)
        time.sleep(rnd.uniform(0.05, 1.2))
        if proc.poll() is not None:
            break  # the run finished on its own
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        kills += 1
    assert kills >= 6
    final = batchd.submit(src, **env)
    assert final.returncode == 0, final.stderr
    _assert_complete_once(batchd, emulator, n)
    assert len(emulator.batch_count_by_metadata("batchd_chunk")) == 10


def test_cancel_while_running(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(8))
    submit = batchd.popen(
        "submit", str(src), "--output", str(batchd.out), BATCHD_POLL_INTERVAL_S="0.05"
    )
    deadline = time.monotonic() + 30
    while len(emulator.batches()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emulator.batches()) == 2
    run_id = next(iter(emulator.batches()[0]["metadata"].values()))
    assert run_id.startswith("run-")
    cancel = batchd.popen("cancel", run_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {b["status"] for b in emulator.batches()} != {
        "cancelling"
    }:
        time.sleep(0.05)
    assert {b["status"] for b in emulator.batches()} == {"cancelling"}
    emulator.advance_all()  # the vendor stops the batches: finished lines are kept
    _, cancel_err = cancel.communicate(timeout=60)
    _, submit_err = submit.communicate(timeout=60)
    assert cancel.returncode == 4, cancel_err
    assert submit.returncode == 4, submit_err
    assert {b["status"] for b in emulator.batches()} == {"cancelled"}
    statuses = Counter(r["status"] for r in batchd.results())
    # The emulator finishes the first half of each cancelled batch: those are kept.
    assert statuses == {"succeeded": 4, "canceled": 4}


def test_cancel_with_no_process_running(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(4))
    submit = batchd.popen("submit", str(src), "--output", str(batchd.out))
    deadline = time.monotonic() + 30
    while len(emulator.batches()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    submit.send_signal(signal.SIGKILL)
    submit.wait(timeout=30)
    run_id = emulator.batches()[0]["metadata"]["batchd_run"]
    emulator.set_step_mode(manual=False)
    cancel = batchd.run("cancel", run_id, timeout=60)
    assert cancel.returncode == 4, cancel.stderr
    rows = batchd.results()
    assert len(rows) == 4 and {r["status"] for r in rows} <= {"succeeded", "canceled"}
    assert "canceled" in {r["status"] for r in rows}


def test_ctrl_c_keeps_the_run(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(2))
    submit = batchd.popen("submit", str(src), "--output", str(batchd.out))
    deadline = time.monotonic() + 30
    while len(emulator.batches()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    submit.send_signal(signal.SIGINT)
    _, err = submit.communicate(timeout=30)
    assert submit.returncode == 130 and "resume" in err
    emulator.set_step_mode(manual=False)
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    _assert_complete_once(batchd, emulator, 2)


def test_deadline_cancels_the_batch_and_ends_lines_expired(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)  # the vendor never finishes on its own
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(4))
    # turnaround_s 0: trust the vendor to finish before a 6 s deadline (the planner would
    # otherwise plan these lines straight to the synchronous tiers: the batch turnaround prior
    # is minutes); fallback none: no deadline guard, unfinished lines end expired as before.
    # 6 s: both batches are created before it even on a loaded machine (a chunk still
    # unsent at its deadline ends `expired` without being sent).
    submit = batchd.popen(
        "submit",
        str(src),
        "--output",
        str(batchd.out),
        "--deadline",
        "6s",
        BATCHD_PLANNER_TURNAROUND_S="0",
        BATCHD_FALLBACK="none",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        len(emulator.batches()) < 2 or {b["status"] for b in emulator.batches()} != {"cancelling"}
    ):
        time.sleep(0.05)
    assert {b["status"] for b in emulator.batches()} == {"cancelling"}
    emulator.advance_all()
    _, err = submit.communicate(timeout=60)
    assert submit.returncode == 3, err
    statuses = Counter(r["status"] for r in batchd.results())
    assert statuses == {"succeeded": 2, "expired": 2}  # finished work kept, nothing resent
    assert len(emulator.batches()) == 2
