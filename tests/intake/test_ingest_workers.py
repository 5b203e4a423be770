"""Parsing in worker processes gives exactly what parsing inline gives, in input order."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchd.config.settings import load_settings
from batchd.intake.ingest import ingest
from batchd.intake.lines import iter_lines
from batchd.planning.chunking import Chunker
from batchd.run.services import open_services


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
    svc = open_services(
        load_settings(
            environ={
                "BATCHD_HOME": str(tmp / f"home{workers}"),
                "BATCHD_OPENAI_MAX_LINES_PER_CHUNK": "500",
            }
        )
    )
    files: dict[str, io.BytesIO] = {}

    def open_file(rel: str) -> io.BytesIO:
        files[rel] = _Keep()
        return files[rel]

    chunker = Chunker(
        "r", svc.settings, svc.prices, svc.backends, open_file, run_deadline_at=float("inf")
    )
    batches: list[pa.RecordBatch] = []
    stats = ingest(
        io.BytesIO(data),
        router=svc.router,
        chunker=chunker,
        cache=svc.cache,
        default_tenant="t",
        run_salt="salt",
        write_rows=batches.append,
        workers=workers,
    )
    chunks = chunker.finish()
    return (
        stats,
        pa.Table.from_batches(batches).to_pylist(),
        [files[c.path].getvalue() for c in chunks],
    )


class _Keep(io.BytesIO):
    def close(self) -> None:  # keep the bytes readable after the chunker closes the file
        pass


def test_workers_match_inline(tmp_path: Path, monkeypatch: Any) -> None:
    data = _data(30_000)
    # Small blocks so the pool gets many of them.
    monkeypatch.setattr(
        "batchd.intake.ingest.iter_lines",
        lambda s, max_line_bytes: iter_lines(s, max_line_bytes, 64 * 1024),
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
        "batchd.intake.ingest.iter_lines",
        lambda s, max_line_bytes: iter_lines(s, max_line_bytes, 64 * 1024),
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
