"""The deadline guard releases GPU work of alias lines the GPUs have not run by its guard time,
and their vendor target serves them (run.deadline_guard, planning.release).

The vLLM window opens ten minutes after submit, so the planner puts the alias's lines on the
GPU (its reserved GPU time is free) and the GPU work never starts during the test. The vLLM
model is an empty directory: starting an engine would fail the chunk, so a passing run also
shows that none was started for work that waits for its window.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from batchd.backends.vllm.runner import CANCELLED, GpuRunner, read_done, request_cancel
from batchd.state.base import Chunk, Run
from batchd.state.sqlite_store import SqliteStore
from batchd.storage.blobs import LocalBlobs
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, vllm_settings, write_jsonl


def _config(tmp_path: Path) -> Path:
    start = (datetime.now(UTC) + timedelta(minutes=10)).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=60)
    model = tmp_path / "no-engine"
    model.mkdir()
    (tmp_path / "batchd.toml").write_text(
        f"""
[backends.vllm]
model = "{model}"
served_model_name = "tiny"
windows = ["{start:%H:%M}-{end:%H:%M}"]
timezone = "UTC"
admit_margin_s = 0
gpu_hourly_usd = 3.6

[planner]
gpu_reserved = true

[models.small]
targets = ["vllm:tiny", "openai:gpt-5.4-nano"]
"""
    )
    return model


def _lines(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"a{i}",
            "model": "small",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": f"released {i}"}],
        }
        for i in range(n)
    ]


def _chunks(batchd: Batchd) -> list[Chunk]:
    store = SqliteStore(batchd.home / "state.db")
    try:
        return store.chunks(store.list_runs(1)[0].run_id)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("margin_s", "handed_to_gpu"),
    [("1200", False), ("1195", True)],
    ids=["guard-before-the-gpu-got-it", "guard-while-it-waits-on-the-gpu"],
)
def test_gpu_work_released_by_the_guard_reaches_a_vendor(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    tmp_path: Path,
    margin_s: str,
    handed_to_gpu: bool,
) -> None:
    _config(tmp_path)
    src = write_jsonl(tmp_path / "in.jsonl", _lines(5))
    done = batchd.submit(src, "--within", "20m", "--guard-margin-s", margin_s)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = batchd.results()
    assert Counter(r["status"] for r in rows) == {"succeeded": 5}
    assert {(r["backend"], r["model_used"], r["tier"]) for r in rows} == {
        ("openai", "gpt-5.4-nano", "flex")
    }
    assert all(r["output_text"] == f"echo: released {r['custom_id'][1:]}" for r in rows)
    assert all(r["gpu_seconds"] == 0 for r in rows)
    sent = Counter(c["body"]["messages"][0]["content"] for c in emulator.sync_calls)
    assert sent == Counter(f"released {i}" for i in range(5))  # each line bought once
    assert not emulator.batches()  # past its guard time: synchronously, not as a batch
    chunks = _chunks(batchd)
    gpu = [c for c in chunks if c.backend == "vllm"]
    assert len(gpu) == 1 and gpu[0].counts.get("succeeded") == 0
    assert gpu[0].release_backend == "openai" and gpu[0].release_model == "gpt-5.4-nano"
    assert (gpu[0].cancel_reason == "guard") == handed_to_gpu  # the GPU was told to let go
    vendor = [c for c in chunks if c.backend == "openai"]
    assert [c.n_requests for c in vendor] == [5] and vendor[0].tier == "realtime"


def test_plain_vllm_lines_stay_on_the_gpu(tmp_path: Path) -> None:
    """Only a chunk of alias lines (it has a vendor target) is released."""
    from batchd.config.settings import load_settings
    from batchd.run import deadline_guard as guard
    from batchd.run.services import open_services

    (tmp_path / "empty.toml").write_text("")
    settings = load_settings(
        environ={"BATCHD_HOME": str(tmp_path / "h")}, config_path=tmp_path / "empty.toml"
    )
    svc = open_services(settings)
    t0 = 1_800_000_000.0
    run = Run(
        run_id="r",
        base_id="r",
        source="s",
        output="o",
        options={},
        created_at=t0,
        deadline_at=t0 + 7200,
    )
    plain = Chunk(
        chunk_id="c",
        run_id="r",
        backend="vllm",
        model="tiny",
        path="p",
        n_requests=1,
        n_bytes=1,
        deadline_at=run.deadline_at,
    )
    alias = msgspec.structs.replace(
        plain, release_backend="openai", release_model="gpt-5.4-nano", release_path="p.r"
    )
    fire_at = run.deadline_at - guard.margin_s(svc, run)
    assert not guard.due(svc, run, plain, fire_at)
    assert not guard.due(svc, run, alias, fire_at - 1)
    assert guard.due(svc, run, alias, fire_at)
    assert not guard.due(
        svc, msgspec.structs.replace(run, options={"fallback": "none"}), alias, fire_at
    )
    svc.close()


def test_a_released_chunk_started_later_runs_nothing(tmp_path: Path) -> None:
    """A gpu worker that picks up a chunk after the guard released it ends it at once."""
    blobs = LocalBlobs(tmp_path / "work")
    with blobs.writer("chunks/c.jsonl") as f:
        f.write(b'{"custom_id":"v1","body":{"messages":[{"role":"user","content":"x"}]}}\n')
    request_cancel(blobs, "c", "release")
    model = tmp_path / "no-engine"
    model.mkdir()
    runner = GpuRunner(vllm_settings(model))
    try:
        job = runner.start_chunk("c", "tiny", "chunks/c.jsonl", blobs)
        assert job.state == CANCELLED and job.finished.is_set()
        done = read_done(blobs, "c")
        assert done is not None and done.state == CANCELLED and done.n_outcomes == 0
        assert runner.feeder.admitted_total == 0
    finally:
        runner.close()
