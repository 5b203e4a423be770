"""Reconciliation adopts only batches proven to be the run's own, and cancels nothing else.

Anthropic batches carry no metadata: another application's batch of the same size, created
in the same minutes, must never be adopted or cancelled; a create that succeeded but
answered 500 must be adopted (after its ids prove it), never created twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic

from batchd.state.base import CHUNK_CREATING
from batchd.state.sqlite_store import SqliteStore
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, Batchd, chat, write_jsonl

SONNET = "claude-sonnet-4-5"
N = 5


def _line(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"mine-{i}",
        "params": {
            "model": SONNET,
            "max_tokens": 20,
            "messages": [{"role": "user", "content": f"my question {i}"}],
        },
    }


def _foreign_batch(claude: AnthropicBatchEmulator, n: int = N) -> str:
    """Another application's batch on the same account: same size, created just now."""
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=claude.base_url)
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"other-app-{i}",
                "params": {
                    "model": SONNET,
                    "max_tokens": 20,
                    "messages": [{"role": "user", "content": f"their question {i}"}],
                },
            }
            for i in range(n)
        ]
    )
    client.close()
    return batch.id


def _batch(claude: AnthropicBatchEmulator, batch_id: str) -> dict[str, Any]:
    return next(b for b in claude.batches() if b["id"] == batch_id)


def _own_batches(claude: AnthropicBatchEmulator, foreign: str) -> list[dict[str, Any]]:
    return [b for b in claude.batches() if b["id"] != foreign]


def _recorded_batches(batchd: Batchd) -> set[str]:
    store = SqliteStore(batchd.home / "state.db")
    try:
        return store.known_batch_ids()
    finally:
        store.close()


def _assert_foreign_untouched(claude: AnthropicBatchEmulator, foreign: str) -> None:
    batch = _batch(claude, foreign)
    assert batch["cancel_initiated_at"] is None
    assert batch["request_counts"]["canceled"] == 0


def _assert_all_mine_succeeded(batchd: Batchd) -> None:
    rows = batchd.results()
    assert [r["custom_id"] for r in rows] == [f"mine-{i}" for i in range(N)]
    assert [r["output_text"] for r in rows] == [f"echo: my question {i}" for i in range(N)]
    assert {r["status"] for r in rows} == {"succeeded"}


def test_foreign_batch_of_same_size_is_never_adopted(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    foreign = _foreign_batch(claude)
    # Creates that fail with a 500 (nothing made; a 429/529 is retried in place instead):
    # batchd cannot tell, so it must reconcile before creating again.
    claude.faults.server_error_creates = 2
    src = write_jsonl(tmp_path / "a.jsonl", [_line(i) for i in range(N)])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    assert claude.faults.server_error_creates == 0
    _assert_all_mine_succeeded(batchd)
    own = _own_batches(claude, foreign)
    assert len(own) == 1  # the foreign one was read, ruled out, and batchd created its own
    sent = [r["custom_id"] for r in claude.requests_seen()]
    assert Counter(c.startswith("other-app-") for c in sent) == {True: N, False: N}
    assert _recorded_batches(batchd) == {own[0]["id"]}  # no chunk ever took the foreign one
    _assert_foreign_untouched(claude, foreign)


def test_create_that_succeeded_but_answered_500_is_adopted_not_repeated(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    foreign = _foreign_batch(claude)  # a same-size decoy in the window
    claude.faults.server_error_after_creates = 1
    src = write_jsonl(tmp_path / "b.jsonl", [_line(i) for i in range(N)])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    assert claude.faults.server_error_after_creates == 0  # the fault fired
    own = _own_batches(claude, foreign)
    assert len(own) == 1, own  # adopted on proof of its ids: not created a second time
    assert _recorded_batches(batchd) == {own[0]["id"]}
    _assert_all_mine_succeeded(batchd)
    _assert_foreign_untouched(claude, foreign)


def _run_id_once_waiting(batchd: Batchd, claude: AnthropicBatchEmulator) -> str:
    """The run id, once its chunk's create failed and it waits in `creating`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (batchd.home / "state.db").exists() and claude.faults.server_error_creates == 0:
            store = SqliteStore(batchd.home / "state.db")
            try:
                runs = store.list_runs()
                chunks = store.chunks(runs[0].run_id) if runs else []
            finally:
                store.close()
            if chunks and chunks[0].state == CHUNK_CREATING and chunks[0].intent_at:
                return runs[0].run_id
        time.sleep(0.05)
    raise AssertionError("the run never reached a failed create")


def test_cancel_while_a_candidate_is_unproven_leaves_it_alone(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.set_step_mode(manual=True)  # the foreign batch stays in progress: unprovable
    foreign = _foreign_batch(claude)
    claude.faults.server_error_creates = 1
    src = write_jsonl(tmp_path / "c.jsonl", [_line(i) for i in range(N)])
    submit = batchd.popen("submit", str(src), "--output", str(batchd.out))
    run_id = _run_id_once_waiting(batchd, claude)
    time.sleep(0.3)  # several reconcile rounds: batchd waits, creates nothing
    assert _own_batches(claude, foreign) == []
    cancel = batchd.run("cancel", run_id, timeout=60)
    _, err = submit.communicate(timeout=60)
    assert cancel.returncode == 4, cancel.stderr
    assert submit.returncode == 4, err
    rows = batchd.results()
    assert {r["status"] for r in rows} == {"canceled"} and len(rows) == N
    assert all(foreign in r["error_message"] for r in rows)
    assert _own_batches(claude, foreign) == []  # nothing bought after the cancel
    batch = _batch(claude, foreign)
    assert batch["processing_status"] == "in_progress"  # never cancelled: not batchd's
    _assert_foreign_untouched(claude, foreign)


def test_waiting_for_proof_is_bounded_by_the_deadline(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.set_step_mode(manual=True)
    foreign = _foreign_batch(claude)
    claude.faults.server_error_creates = 1
    src = write_jsonl(tmp_path / "d.jsonl", [_line(i) for i in range(N)])
    # turnaround_s 0: trust the vendor to finish before a short deadline; fallback none: no
    # deadline guard sending the lines synchronously instead
    proc = batchd.submit(
        src, "--deadline", "3s", BATCHD_PLANNER_TURNAROUND_S="0", BATCHD_FALLBACK="none"
    )
    assert proc.returncode == 3, proc.stderr
    rows = batchd.results()
    assert {r["status"] for r in rows} == {"expired"} and len(rows) == N
    assert _own_batches(claude, foreign) == []  # waited, never paid twice
    assert _batch(claude, foreign)["processing_status"] == "in_progress"
    _assert_foreign_untouched(claude, foreign)


# -- OpenAI: orphan input files of an interrupted upload -------------------------------------


def test_orphan_upload_is_deleted_on_resume_foreign_files_kept(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    from openai import OpenAI

    from tests.support.helpers import API_KEY

    client = OpenAI(api_key=API_KEY, base_url=emulator.base_url)
    keep = [
        client.files.create(file=("theirs.jsonl", b"{}\n"), purpose="batch").id,
        # batchd's naming, but for another chunk: not this chunk's leftover
        client.files.create(
            file=("batchd-run-0000000000000000-c00001-1.jsonl", b"{}\n"), purpose="batch"
        ).id,
    ]
    client.close()
    src = write_jsonl(tmp_path / "o.jsonl", [chat(f"k{i}", f"q {i}") for i in range(3)])
    victim: dict[str, subprocess.Popen[str]] = {}
    orphans: list[str] = []

    def kill_after_upload(file: dict[str, Any]) -> None:
        emulator.faults.after_file_create = None
        orphans.append(file["id"])
        os.kill(victim["proc"].pid, signal.SIGKILL)

    emulator.faults.after_file_create = kill_after_upload
    victim["proc"] = batchd.popen("submit", str(src), "--output", str(batchd.out))
    victim["proc"].wait(timeout=60)
    assert victim["proc"].returncode == -signal.SIGKILL
    assert emulator.batches() == [] and len(orphans) == 1
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    files = {f["id"]: f for f in emulator.files()}
    assert orphans[0] not in files  # the interrupted upload was found and deleted
    assert all(k in files for k in keep)  # foreign files are never touched
    assert len(emulator.batches()) == 1
    assert emulator.batches()[0]["input_file_id"] in files
    assert {r["status"] for r in batchd.results()} == {"succeeded"}
