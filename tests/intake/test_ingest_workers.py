"""Parsing in worker processes gives exactly what parsing inline gives, in input order."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from batchd.intake import spans
from batchd.intake.lines import iter_blocks
from tests.support.hostile import ingest_rows, open_test_services


def _data(n: int) -> bytes:
    rnd = random.Random(3)
    out = []
    for i in range(n):
        j = rnd.randrange(n // 2)  # many repeats
        kind = i % 7
        if kind == 0:
            out.append(b"{broken json")
        elif kind == 1:
            out.append(
                json.dumps(
                    {"id": f"i{i}", "model": "gpt-5.4-nano", "prompt": f"p{j}", "cache": False}
                ).encode()
            )
        elif kind == 2:
            out.append(
                json.dumps(
                    {
                        "custom_id": f"i{j}",
                        "params": {
                            "model": "gpt-5.4-mini",
                            "max_tokens": 9,
                            "messages": [{"role": "user", "content": f"p{j}"}],
                        },
                    }
                ).encode()
            )
        else:
            out.append(
                json.dumps(
                    {
                        "custom_id": f"i{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": "gpt-5.4-nano",
                            "max_tokens": 5 + j % 3,
                            "messages": [{"role": "user", "content": f"p{j}"}],
                        },
                    }
                ).encode()
            )
    return b"\n".join(out) + b"\n"


def _run(tmp: Path, data: bytes, workers: int) -> tuple[Any, list[dict[str, Any]], list[bytes]]:
    svc = open_test_services(tmp / f"w{workers}", BATCHD_OPENAI_MAX_LINES_PER_CHUNK="500")
    try:
        stats, rows, files = ingest_rows(svc, data, workers=workers)
    finally:
        svc.close()
    return stats, rows, list(files.values())


def test_workers_match_inline(tmp_path: Path, monkeypatch: Any) -> None:
    data = _data(30_000)
    # Small blocks so the pool gets many of them.
    monkeypatch.setattr(
        "batchd.intake.ingest.iter_blocks",
        lambda s, max_line_bytes: iter_blocks(s, max_line_bytes, 64 * 1024),
    )
    inline = _run(tmp_path, data, workers=1)
    pooled = _run(tmp_path, data, workers=2)
    assert inline[0] == pooled[0]
    assert inline[0].lines == 30_000 and inline[0].in_run_duplicates > 1000
    assert inline[0].invalid_by_type["duplicate_custom_id"] > 0
    assert inline[1] == pooled[1]
    assert [r["line_no"] for r in pooled[1]] == list(range(1, 30_001))
    assert inline[2] == pooled[2] and len(pooled[2]) > 2


def test_workers_in_a_threaded_process_match_inline(tmp_path: Path, monkeypatch: Any) -> None:
    """As in a coordinator: other threads are alive, so the pool uses a fork server."""
    import threading

    data = _data(6_000)
    monkeypatch.setattr(
        "batchd.intake.ingest.iter_blocks",
        lambda s, max_line_bytes: iter_blocks(s, max_line_bytes, 64 * 1024),
    )
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        assert threading.active_count() > 1
        pooled = _run(tmp_path, data, workers=2)
    finally:
        stop.set()
    inline = _run(tmp_path, data, workers=1)
    assert inline[0] == pooled[0] and inline[1] == pooled[1] and inline[2] == pooled[2]


def _spans_of(
    tmp: Path, data: bytes, workers: int
) -> tuple[Any, list[dict[str, Any]], list[bytes]]:
    """_run, the input read from a local file (its blocks handed to workers as spans)."""
    svc = open_test_services(tmp / f"f{workers}", BATCHD_OPENAI_MAX_LINES_PER_CHUNK="500")
    try:
        stats, rows, files = ingest_rows(
            svc, data, workers=workers, source=tmp / f"in{workers}.jsonl"
        )
    finally:
        svc.close()
    return stats, rows, list(files.values())


def test_workers_reading_spans_of_a_local_file_match_inline(
    tmp_path: Path, monkeypatch: Any
) -> None:
    data = _data(20_000)
    spans_read: list[int] = []
    real = spans.read_span

    def counted(span: spans.Span) -> bytes:
        spans_read.append(span.length)
        return real(span)

    handed: list[bool] = []

    def small(s: Any, max_line_bytes: int) -> Any:
        for job in spans.numbered_spans(s, max_line_bytes, 64 * 1024):
            handed.append(isinstance(job[1], spans.Span))
            yield job

    monkeypatch.setattr(spans, "read_span", counted)  # in this process: none are
    monkeypatch.setattr("batchd.intake.ingest.numbered_spans", small)
    inline = _run(tmp_path, data, workers=1)
    pooled = _spans_of(tmp_path, data, workers=2)
    assert inline[0] == pooled[0] and inline[1] == pooled[1] and inline[2] == pooled[2]
    assert [r["line_no"] for r in pooled[1]] == list(range(1, 20_001))
    assert len(handed) > 10 and all(handed)  # every block went to a worker as a span
    assert spans_read == []  # the workers read every span; this process read none again


def test_a_file_read_as_spans_by_a_fork_server_pool_matches_inline(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A fork server's workers have no descriptor of the file: they open it by its path."""
    import threading

    data = _data(4_000)
    monkeypatch.setattr(
        "batchd.intake.ingest.numbered_spans",
        lambda s, max_line_bytes: spans.numbered_spans(s, max_line_bytes, 32 * 1024),
    )
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        pooled = _spans_of(tmp_path, data, workers=2)
    finally:
        stop.set()
    inline = _run(tmp_path, data, workers=1)
    assert inline[0] == pooled[0] and inline[1] == pooled[1] and inline[2] == pooled[2]
