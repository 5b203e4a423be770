"""No run is stuck for good: cancel ends a run in any state without re-running the step that
failed; a finalize that cannot write its output is retried, then ends with the reason; a
resubmit with --output writes to the new place; a resubmit with other options names the
unfinished run instead of starting a second one beside it."""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from batchd.config.settings import load_settings
from batchd.run.identity import run_options, start_run
from batchd.run.services import open_services
from batchd.state.base import Run
from batchd.state.sqlite_store import SqliteStore
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.run.test_preflight import assert_one_red_line
from tests.support.helpers import Batchd, chat, write_jsonl

HANG_GUARD_S = 60


def _lines(n: int) -> list[dict[str, Any]]:
    return [
        chat(f"k{i}", f"request {i}", model=("gpt-5.4-nano", "gpt-5.4-mini")[i % 2])
        for i in range(n)
    ]


def _wait_for(what: Any, guard_s: float = HANG_GUARD_S) -> None:
    end = time.monotonic() + guard_s
    while not what():
        assert time.monotonic() < end, "hang guard: the condition never came true"
        time.sleep(0.05)


def _only_run(batchd: Batchd) -> Run:
    store = SqliteStore(batchd.home / "state.db")
    try:
        runs = store.list_runs()
    finally:
        store.close()
    assert len(runs) == 1, runs
    return runs[0]


def _submit_and_kill_once_sent(
    batchd: Batchd, emulator: OpenAIBatchEmulator, src: Path, sent: Any, **env: str
) -> str:
    emulator.set_step_mode(manual=True)
    proc = batchd.popen("submit", str(src), "--output", str(batchd.out), **env)
    _wait_for(sent)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=HANG_GUARD_S)
    return str(emulator.batches()[0]["metadata"]["batchd_run"])


def test_cancel_ends_a_run_stuck_in_ingesting_without_reading_it_again(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "gone.jsonl", _lines(3))
    settings = load_settings(environ={"BATCHD_HOME": str(batchd.home)})
    svc = open_services(settings)
    try:
        run, _ = start_run(svc, str(src), str(batchd.out), run_options(settings), None)
    finally:
        svc.close()
    src.unlink()  # its ingest can never succeed now: submit would fail on it again and again
    assert _only_run(batchd).state == "ingesting"
    cancel = batchd.run("cancel", run.run_id, timeout=HANG_GUARD_S)
    assert cancel.returncode == 4, cancel.stderr
    assert "Traceback" not in cancel.stderr
    done = _only_run(batchd)
    assert (done.state, done.outcome) == ("done", "canceled")
    assert "before its input was read" in done.error
    assert emulator.batches() == [] and not batchd.out.exists()
    # `status` could show the run: exit 0 however it ended (issue 17); the outcome is in the text
    status = batchd.run("status", run.run_id)
    assert status.returncode == 0 and "no results" in status.stdout and "canceled" in status.stdout


def test_cancel_ends_a_dispatching_run_whose_backend_cannot_be_reached(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.set_step_mode(manual=True)
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [chat("o1", "to openai"), chat("c1", "to claude", model="claude-haiku-4-5")],
    )
    run_id = _submit_and_kill_once_sent(
        batchd, emulator, src, lambda: len(emulator.batches()) == len(claude.batches()) == 1
    )
    # The key is gone now: every step of the Claude chunk fails (poll, cancel, collect).
    cancel = batchd.popen("cancel", run_id, ANTHROPIC_API_KEY="")
    _wait_for(lambda: {b["status"] for b in emulator.batches()} == {"cancelling"})
    emulator.advance_all()
    _, err = cancel.communicate(timeout=HANG_GUARD_S)
    assert cancel.returncode == 4, err
    assert "Traceback" not in err
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert list(rows) == ["o1", "c1"]
    assert rows["c1"]["status"] == "canceled"
    assert "ANTHROPIC_API_KEY" in rows["c1"]["error_message"]
    assert rows["o1"]["status"] in ("succeeded", "canceled")
    assert len(emulator.batches()) == 1 and len(claude.batches()) == 1  # nothing bought again


def _make_output_unwritable(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.write_text("the output became a file")


def test_finalize_that_cannot_write_is_retried_then_ends_with_the_reason(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(4))
    emulator.set_step_mode(manual=True)
    env = {"BATCHD_MAX_STEP_FAILURES": "3", "BATCHD_STEP_RETRY_BASE_S": "0.05"}
    proc = batchd.popen("submit", str(src), "--output", str(batchd.out), "-q", **env)
    _wait_for(lambda: len(emulator.batches()) == 2)
    _make_output_unwritable(batchd.out)  # after the preflight, before finalize
    emulator.set_step_mode(manual=False)
    _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 1, err
    assert_one_red_line(err, "ended without results", "finalize gave up after 3 failed attempts")
    run = _only_run(batchd)
    assert (run.state, run.outcome) == ("done", "failed")
    status = batchd.run("status", run.run_id)
    assert status.returncode == 0 and "finalize gave up" in status.stdout
    # The answers were paid for once: a new run elsewhere gets them from the cache.
    elsewhere = tmp_path / "elsewhere"
    again = batchd.run("submit", str(src), "--output", str(elsewhere))
    assert again.returncode == 0, again.stderr
    rows = batchd.results(next(elsewhere.iterdir()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"succeeded"}
    assert {r["cache"] for r in rows} == {"exact"}
    assert len(emulator.batches()) == 2


def _kill_during_finalize_retries(batchd: Batchd, emulator: OpenAIBatchEmulator, src: Path) -> Run:
    emulator.set_step_mode(manual=True)
    # A long backoff: the first failed finalize waits, and the process is killed meanwhile.
    proc = batchd.popen(
        "submit", str(src), "--output", str(batchd.out), "-q", BATCHD_STEP_RETRY_BASE_S="600"
    )
    _wait_for(lambda: len(emulator.batches()) == 2)
    _make_output_unwritable(batchd.out)
    emulator.set_step_mode(manual=False)
    _wait_for(lambda: _only_run(batchd).failures >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=HANG_GUARD_S)
    run = _only_run(batchd)
    assert run.state == "finalizing" and "finalize failed (1/5)" in run.error
    return run


def test_resubmit_with_output_writes_a_failing_finalize_to_the_new_place(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(4))
    run = _kill_during_finalize_retries(batchd, emulator, src)
    new = tmp_path / "new-out"
    again = batchd.run("submit", str(src), "--output", str(new))
    assert again.returncode == 0, again.stderr
    assert f"Resuming unfinished run {run.run_id}" in again.stderr
    assert f"Its results now go to {new} (was {batchd.out})" in again.stderr
    rows = batchd.results(new / run.run_id)
    assert [r["custom_id"] for r in rows] == [f"k{i}" for i in range(4)]
    assert {r["status"] for r in rows} == {"succeeded"}
    assert len(emulator.batches()) == 2
    done = _only_run(batchd)
    assert (done.state, done.outcome, done.error, done.failures) == ("done", "succeeded", "", 0)


def test_cancel_of_a_failing_finalize_does_not_finalize_again(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(4))
    run = _kill_during_finalize_retries(batchd, emulator, src)
    cancel = batchd.run("cancel", run.run_id, timeout=HANG_GUARD_S)
    assert cancel.returncode == 4, cancel.stderr
    assert "Traceback" not in cancel.stderr
    done = _only_run(batchd)
    assert (done.state, done.outcome) == ("done", "canceled")
    assert done.error.startswith("canceled; its finalize had failed")
    assert batchd.out.read_text() == "the output became a file"


def test_resubmit_with_other_options_names_the_unfinished_run(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(4))
    run_id = _submit_and_kill_once_sent(batchd, emulator, src, lambda: len(emulator.batches()) == 2)
    other = batchd.run("submit", str(src), "--output", str(batchd.out), "--deadline", "12h")
    assert other.returncode == 1
    line = assert_one_red_line(other.stderr, run_id, "--deadline", f"batchd cancel {run_id}")
    assert "'12h'" in line and "dispatching" in line
    assert len(emulator.batches()) == 2  # nothing sent for a second run
    store_runs = SqliteStore(batchd.home / "state.db")
    try:
        assert [r.run_id for r in store_runs.list_runs()] == [run_id]
    finally:
        store_runs.close()
    emulator.set_step_mode(manual=False)
    same = batchd.submit(src)  # the way out it names: the same options resume
    assert same.returncode == 0, same.stderr
    assert Counter(r["status"] for r in batchd.results()) == {"succeeded": 4}
    assert len(emulator.batches()) == 2


def test_status_shows_why_a_run_waits(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [chat("c1", "to claude", model="claude-haiku-4-5")])
    got = batchd.submit(src, ANTHROPIC_API_KEY="")
    assert got.returncode == 1
    run = _only_run(batchd)
    status = batchd.run("status", run.run_id)
    assert "waiting on" in status.stdout and "ANTHROPIC_API_KEY" in status.stdout
    assert claude.batches() == []
