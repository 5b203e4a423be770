"""The parse pool never hangs: a worker that dies or raises mid-block ends the pool
cleanly, its block is parsed again in the main process, and every line still gets one row."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from batchd.intake import decode, parse_pool
from batchd.intake.lines import RawBlock, iter_blocks, lines_of
from tests.support.hostile import (
    OPENAI_MODEL,
    check_one_row_per_line,
    ingest_rows,
    open_test_services,
)

MARK = "poison-block"


def _input(n: int, pad: int = 0) -> bytes:
    lines = []
    for i in range(n):
        prompt = MARK if i == n // 2 else f"q{i} " + "x" * pad
        lines.append(json.dumps({"id": f"r{i}", "model": OPENAI_MODEL, "prompt": prompt}))
        if i % 97 == 0:
            lines.append("{not json")  # bad lines ride along
    return ("\n".join(lines) + "\n").encode()


def _sabotage(monkeypatch: pytest.MonkeyPatch, tmp: Path, how: str) -> Path:
    """In a worker process only, the block holding MARK dies (SIGKILL) or raises."""
    main_pid = os.getpid()
    flag = tmp / "sabotaged"
    real = decode.parse_block

    def parse_block(first: int, lines: RawBlock, ctx: Any) -> Any:
        if os.getpid() != main_pid and any(x and MARK.encode() in x for x in lines_of(lines)):
            flag.write_text(how)
            if how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("a worker fault")
        return real(first, lines, ctx)

    monkeypatch.setattr(decode, "parse_block", parse_block)
    # the patch reaches workers only when they are forked: the pool forks when this is the
    # process's only thread, which an earlier test's leftover threads may have changed
    monkeypatch.setattr(parse_pool.threading, "active_count", lambda: 1)
    return flag


def _small_blocks(monkeypatch: pytest.MonkeyPatch, block_bytes: int) -> None:
    monkeypatch.setattr(
        "batchd.intake.ingest.iter_blocks",
        lambda s, max_line_bytes: iter_blocks(s, max_line_bytes, block_bytes),
    )


@pytest.mark.timeout(120)  # a hang guard: the pool used to wait forever on a dead worker
def test_worker_killed_mid_block_ends_cleanly_with_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _input(6000)
    _small_blocks(monkeypatch, 32 * 1024)
    svc = open_test_services(tmp_path)
    try:
        inline = ingest_rows(svc, data, workers=1)
        flag = _sabotage(monkeypatch, tmp_path, "die")
        stats, rows, files = ingest_rows(svc, data, workers=2)
    finally:
        svc.close()
    assert flag.read_text() == "die"  # a worker really died
    n = data.count(b"\n")
    check_one_row_per_line(stats, rows, n)
    assert rows == inline[1] and files == inline[2]
    assert stats.invalid_by_type == {"invalid_json": 62}


@pytest.mark.timeout(180)
def test_worker_raising_on_a_20mb_input_is_reparsed_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _input(20_000, pad=1000)
    assert len(data) > 20 * 1024 * 1024
    svc = open_test_services(tmp_path)
    try:
        flag = _sabotage(monkeypatch, tmp_path, "raise")
        stats, rows, _ = ingest_rows(svc, data, workers=2, dry_run=True)
    finally:
        svc.close()
    assert flag.read_text() == "raise"
    n = data.count(b"\n")
    check_one_row_per_line(stats, rows, n)
    marked = next(r for r in rows if r["custom_id"] == "r10000")
    assert marked["state"] == "pending"  # parsed again here, as a good line
    assert stats.to_send == 20_000 and stats.invalid_by_type == {"invalid_json": 207}


@pytest.mark.timeout(120)
def test_record_that_cannot_cross_processes_becomes_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value the hand-over cannot encode (here a max_tokens past 64 bits slipped through)
    faults that line only."""
    real = decode.parse_block

    def parse_block(first: int, lines: RawBlock, ctx: Any) -> Any:
        block = real(first, lines, ctx)
        for record, raw in zip(block.records, lines_of(lines), strict=True):
            if raw and MARK.encode() in raw:
                record.max_tokens = 2**70
        return block

    monkeypatch.setattr(decode, "parse_block", parse_block)
    monkeypatch.setattr(parse_pool.threading, "active_count", lambda: 1)  # forked workers
    _small_blocks(monkeypatch, 32 * 1024)
    data = _input(3000)
    svc = open_test_services(tmp_path)
    try:
        stats, rows, _ = ingest_rows(svc, data, workers=2, dry_run=True)
    finally:
        svc.close()
    check_one_row_per_line(stats, rows, data.count(b"\n"))
    bad = next(r for r in rows if r["custom_id"] == "r1500")
    assert bad["error_type"] == "internal_error" and "hand-over" in bad["error_message"]
