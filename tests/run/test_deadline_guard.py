"""The deadline guard: batches that never finish are cut at deadline - margin and the rest is
sent synchronously (OpenAI flex, then realtime; Claude Messages API), at that tier's price.

Vendor batches are planned to take 0 s (`BATCHD_PLANNER_TURNAROUND_S=0`) so the planner
sends these lines as batches; the emulators never advance a batch on their own (manual
step mode), and a guard margin a few seconds short of the deadline makes the guard fire once
the batch exists (3 s after submit: long enough for ingest and the first create).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from batchd.config.pricing import Usage, load_price_book
from batchd.config.settings import Settings
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

HANG_GUARD_S = 60.0
GUARDED = {"BATCHD_PLANNER_TURNAROUND_S": "0"}
PRICES = load_price_book(Settings())


def _wait(cond: Any, what: str) -> None:
    end = time.monotonic() + HANG_GUARD_S
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _submit(batchd: Batchd, src: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return batchd.popen(
        "submit", str(src), "--output", str(batchd.out), *args, **{**GUARDED, **env}
    )


def _cost(model: str, row: dict[str, Any], batch: bool) -> float:
    usage = Usage(row["input_tokens"], 0, 0, row["output_tokens"])
    return PRICES.cost_usd(PRICES.require(model), usage, batch=batch)


def _cut_and_finish(
    batchd: Batchd, emulator: OpenAIBatchEmulator, src: Path, *args: str
) -> tuple[int, str]:
    """Submit; wait until the guard cancelled the batch; let the vendor stop it."""
    submit = _submit(batchd, src, "--within", "60s", "--guard-margin-s", "57", *args)
    _wait(
        lambda: emulator.batches() and emulator.batches()[0]["status"] == "cancelling",
        "the guard's cancel",
    )
    emulator.advance_all()  # the vendor stops the batch: the first half of its lines ran
    _, err = submit.communicate(timeout=HANG_GUARD_S)
    return submit.returncode, err


def test_batch_that_never_finishes_is_finished_by_flex(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "j.jsonl", [chat(f"g{i}", f"guarded {i}") for i in range(6)])
    rc, err = _cut_and_finish(batchd, emulator, src)
    assert rc == 0, err
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert all(r["output_text"] == f"echo: guarded {r['custom_id'][1:]}" for r in rows.values())
    by_tier = Counter(r["tier"] for r in rows.values())
    assert by_tier == {"batch": 3, "flex": 3}
    # Nothing the batch finished was bought again: the flex calls are exactly the rest.
    sent_sync = Counter(c["body"]["messages"][0]["content"] for c in emulator.sync_calls)
    flex_rows = {f"guarded {cid[1:]}" for cid, r in rows.items() if r["tier"] == "flex"}
    assert set(sent_sync) == flex_rows and set(sent_sync.values()) == {1}
    assert {c["tier"] for c in emulator.sync_calls} == {"flex"}
    assert len(emulator.batches()) == 1  # the cut lines were not sent as another batch
    for r in rows.values():  # flex is billed at the batch price, like the batch itself
        assert r["cost_usd"] == pytest.approx(_cost("gpt-5.4-nano", r, batch=True))
    report = batchd.run("report", batchd.only_run_dir().name)
    assert report.returncode == 0, report.stderr
    assert "flex 3" in report.stdout and "batch 3" in report.stdout
    assert "3 of 6 served lines (50%)" in report.stdout
    assert "the deadline cost you $0.0000" in report.stdout


def test_shed_flex_falls_through_to_realtime_at_list_price(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    emulator.faults.flex_unavailable = True  # every flex call is shed with 429
    emulator.faults.rate_limit_chat = 2  # and the standard tier asks to slow down twice
    emulator.faults.server_error_chat = 1  # and fails once
    src = write_jsonl(tmp_path / "j.jsonl", [chat(f"s{i}", f"shed {i}") for i in range(4)])
    rc, err = _cut_and_finish(batchd, emulator, src)
    assert rc == 0, err
    rows = batchd.results()
    assert {r["status"] for r in rows} == {"succeeded"}
    assert Counter(r["tier"] for r in rows) == {"batch": 2, "realtime": 2}
    statuses = Counter((c["tier"], c["status"]) for c in emulator.sync_calls)
    assert statuses[("default", 200)] == 2 and statuses[("default", 429)] == 2
    assert statuses[("flex", 429)] >= 2
    for r in rows:
        want = _cost("gpt-5.4-nano", r, batch=r["tier"] == "batch")
        assert r["cost_usd"] == pytest.approx(want) and r["cost_usd"] > 0
    realtime = [r for r in rows if r["tier"] == "realtime"]
    extra = sum(r["cost_usd"] - _cost("gpt-5.4-nano", r, batch=True) for r in realtime)
    assert extra > 0
    report = batchd.run("report", batchd.only_run_dir().name)
    assert f"the deadline cost you ${extra:,.4f}" in report.stdout


def test_fallback_flex_only_ends_shed_lines_expired(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    emulator.faults.flex_unavailable = True
    src = write_jsonl(tmp_path / "j.jsonl", [chat(f"f{i}", f"flex {i}") for i in range(2)])
    submit = _submit(batchd, src, "--within", "8s", "--guard-margin-s", "5", "--fallback", "flex")
    _wait(
        lambda: emulator.batches() and emulator.batches()[0]["status"] == "cancelling",
        "the guard's cancel",
    )
    emulator.advance_all()
    _, err = submit.communicate(timeout=HANG_GUARD_S)
    assert submit.returncode == 3, err
    rows = batchd.results()
    assert Counter(r["status"] for r in rows) == {"succeeded": 1, "expired": 1}
    expired = next(r for r in rows if r["status"] == "expired")
    assert expired["tier"] is None and expired["cost_usd"] == 0
    assert {c["tier"] for c in emulator.sync_calls} == {"flex"}  # never the standard tier


def test_fallback_none_ends_unfinished_lines_expired(
    batchd: Batchd, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    emulator.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "j.jsonl", [chat(f"n{i}", f"none {i}") for i in range(4)])
    submit = _submit(batchd, src, "--deadline", "2s", "--fallback", "none")
    _wait(
        lambda: emulator.batches() and emulator.batches()[0]["status"] == "cancelling",
        "the deadline's cancel",
    )
    emulator.advance_all()
    _, err = submit.communicate(timeout=HANG_GUARD_S)
    assert submit.returncode == 3, err
    assert Counter(r["status"] for r in batchd.results()) == {"succeeded": 2, "expired": 2}
    assert not emulator.sync_calls


def test_claude_lines_finish_through_the_messages_api(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.set_step_mode(manual=True)
    claude.faults.rate_limit_messages = 1
    claude.faults.overloaded_messages = 1
    lines = [
        {
            "custom_id": f"c{i}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": f"claude {i}"}],
            },
        }
        for i in range(4)
    ]
    src = write_jsonl(tmp_path / "c.jsonl", lines)
    submit = _submit(batchd, src, "--within", "60s", "--guard-margin-s", "57")
    _wait(
        lambda: claude.batches() and claude.batches()[0]["processing_status"] == "canceling",
        "the guard's cancel",
    )
    claude.advance_all()
    _, err = submit.communicate(timeout=HANG_GUARD_S)
    assert submit.returncode == 0, err
    rows = batchd.results()
    assert {r["status"] for r in rows} == {"succeeded"}
    tiers = Counter(r["tier"] for r in rows)
    assert tiers["realtime"] >= 1 and tiers["realtime"] + tiers["batch"] == 4
    ok = [c for c in claude.sync_calls if c["status"] == 200]
    assert len(ok) == tiers["realtime"]  # each cut line bought once
    assert {c["status"] for c in claude.sync_calls} == {200, 429, 529}
    for r in rows:
        want = _cost("claude-haiku-4-5", r, batch=r["tier"] == "batch")
        assert r["cost_usd"] == pytest.approx(want) and r["cost_usd"] > 0


# --- the guard's timing, with an injected clock ----------------------------------------------


def _svc(tmp_path: Path, **env: str) -> Any:
    from batchd.config.settings import load_settings
    from batchd.run.services import open_services

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return open_services(
        load_settings(environ={"BATCHD_HOME": str(tmp_path / "h"), **env}, config_path=empty)
    )


def test_guard_margin_and_when_it_fires(tmp_path: Path) -> None:
    from batchd.run import deadline_guard as guard
    from batchd.state.base import Chunk, Run

    svc = _svc(tmp_path)
    t0 = 1_800_000_000.0

    def run(hours: float, **options: Any) -> Run:
        return Run(
            run_id="r",
            base_id="r",
            source="s",
            output="o",
            options=options,
            created_at=t0,
            deadline_at=t0 + hours * 3600,
        )

    assert guard.margin_s(svc, run(12)) == 3600.0  # 10% of 12 h, clamped to 1 h
    assert guard.margin_s(svc, run(2)) == pytest.approx(720.0)  # 10% of 2 h
    assert guard.margin_s(svc, run(0.1)) == 60.0  # at least a minute
    assert guard.margin_s(svc, run(2, guard_margin_s=30.0)) == 30.0  # the run's option
    r = run(2)
    chunk = Chunk(
        chunk_id="c",
        run_id="r",
        backend="openai",
        model="m",
        path="p",
        n_requests=1,
        n_bytes=1,
        deadline_at=r.deadline_at,
    )
    fire_at = r.deadline_at - 720.0
    assert not guard.due(svc, r, chunk, fire_at - 1)
    assert guard.due(svc, r, chunk, fire_at)
    assert guard.retry_tier(svc, r, chunk, fire_at - 1) == "batch"  # resent as a batch
    assert guard.retry_tier(svc, r, chunk, fire_at) == "realtime"  # after: synchronously
    assert not guard.due(svc, run(2, fallback="none"), chunk, fire_at)
    assert guard.retry_tier(svc, run(2, fallback="flex"), chunk, fire_at) == "flex"
    gpu = msgspec.structs.replace(chunk, backend="vllm")
    assert not guard.due(svc, r, gpu, fire_at)  # GPU work is not guarded
    svc.close()


def test_collected_rows_carry_their_tier(tmp_path: Path) -> None:
    from batchd.outcome import CANCELED, SUCCEEDED, Outcome
    from batchd.run.collect import _stamp
    from batchd.state.base import Chunk

    svc = _svc(tmp_path)

    def chunk(backend: str) -> Chunk:
        return Chunk(
            chunk_id="c",
            run_id="r",
            backend=backend,
            model="gpt-5.4-nano",
            path="p",
            n_requests=1,
            n_bytes=1,
        )

    done = Outcome(status=SUCCEEDED, input_tokens=10, output_tokens=5)
    assert _stamp(svc, chunk("openai"), done).tier == "batch"
    gpu = Outcome(status=SUCCEEDED, input_tokens=10, output_tokens=5, gpu_seconds=0.5)
    assert _stamp(svc, chunk("vllm"), gpu).tier == "gpu"
    assert _stamp(svc, chunk("openai"), Outcome(status=CANCELED)).tier is None  # not served
    svc.close()
