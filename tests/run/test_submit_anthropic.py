"""`batchd submit` with Claude models against the Anthropic Message Batches emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, Batchd, chat, write_jsonl

SONNET = "claude-sonnet-4-5"
LONG_SYSTEM = "You follow the attached support policy exactly. " + "policy clause " * 700


def cline(cid: str, text: str, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": cid,
        "params": {
            "model": SONNET,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def _sent_texts(emu: AnthropicBatchEmulator) -> Counter[str]:
    return Counter(r["params"]["messages"][-1]["content"] for r in emu.requests_seen())


def test_mixed_vendors_one_results_file(
    batchd: Batchd, emulator: OpenAIBatchEmulator, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    weird = "ticket #42 / ünïcode & spaces " + "x" * 80  # not a valid Anthropic custom_id
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            chat("gpt-1", "openai question"),
            cline(weird, "anthropic format"),
            {
                "id": "native-claude",
                "model": SONNET,
                "prompt": "native one two three",
                "max_tokens": 2,
                "system": "Be terse.",
            },
            chat("chat-claude", "chat format", model=SONNET, stop=["never"]),
            {"id": "bad-claude", "model": SONNET, "prompt": "x", "logprobs": True},
            cline("streamer", "s", stream=True),
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr  # two invalid lines
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert len(rows) == 6
    assert rows["gpt-1"]["backend"] == "openai"
    assert rows["gpt-1"]["output_text"] == "echo: openai question"
    r = rows[weird]
    assert (r["backend"], r["status"], r["output_text"]) == (
        "anthropic",
        "succeeded",
        "echo: anthropic format",
    )
    assert r["finish_reason"] == "stop" and r["input_tokens"] > 0 and r["output_tokens"] == 3
    assert r["cost_usd"] == pytest.approx(r["baseline_cost_usd"] / 2)
    native = rows["native-claude"]
    assert native["finish_reason"] == "length" and native["output_text"] == "echo: native"
    assert rows["chat-claude"]["status"] == "succeeded"
    assert rows["bad-claude"]["error_type"] == "unsupported_parameter"
    assert "logprobs" in rows["bad-claude"]["error_message"]
    assert rows["streamer"]["status"] == "invalid" and "stream" in rows["streamer"]["error_message"]
    # What Claude received: translated params, and batchd's safe ids, never the user's.
    sent = {s["params"]["messages"][-1]["content"]: s for s in claude.requests_seen()}
    assert len(sent) == 3 and len(claude.batches()) == 1 and len(emulator.batches()) == 1
    assert sent["native one two three"]["params"]["system"] == "Be terse."
    assert sent["chat format"]["params"]["stop_sequences"] == ["never"]
    assert sent["chat format"]["params"]["max_tokens"] == 4096  # settings default
    assert sent["anthropic format"]["params"] == claude_params_of(src, 1)
    assert all(len(s["custom_id"]) <= 64 for s in sent.values())


def claude_params_of(path: Path, index: int) -> Any:
    import json

    return json.loads(path.read_text().splitlines()[index])["params"]


def test_result_types_and_retries(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "types.jsonl",
        [
            cline("ok", "fine"),
            cline("invalid", "[[errored:invalid]] no"),
            cline("overloaded", "[[errored:overloaded]] busy"),
            cline("api", "[[errored:api]] oops"),
            cline("long", "one two three four five", max_tokens=2),
        ],
    )
    proc = batchd.submit(src, BATCHD_MAX_ATTEMPTS="3")
    assert proc.returncode == 3
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert rows["ok"]["status"] == "succeeded"
    assert (rows["invalid"]["status"], rows["invalid"]["error_type"]) == (
        "failed",
        "invalid_request_error",
    )
    assert rows["overloaded"]["error_type"] == "overloaded_error"
    assert rows["api"]["error_type"] == "api_error"
    assert rows["long"]["finish_reason"] == "length"
    sent = _sent_texts(claude)
    # Retry only overloaded/api errors; never invalid requests, never a length finish.
    assert sent == {
        "fine": 1,
        "[[errored:invalid]] no": 1,
        "[[errored:overloaded]] busy": 3,
        "[[errored:api]] oops": 3,
        "one two three four five": 1,
    }


def test_expired_batch_keeps_successes_and_resubmits_rest(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.faults.expire_batches = 1
    src = write_jsonl(tmp_path / "exp.jsonl", [cline(f"e{i}", f"item {i}") for i in range(6)])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in batchd.results()} == {"succeeded"}
    assert len(claude.batches()) == 2
    assert sorted(_sent_texts(claude).values()) == [1, 1, 1, 2, 2, 2]


def test_429_and_529_are_retried(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.faults.rate_limit_creates = 2
    claude.faults.overloaded_creates = 1
    claude.faults.overloaded_retrieves = 2
    claude.faults.rate_limit_retrieves = 1
    src = write_jsonl(tmp_path / "r.jsonl", [cline(f"r{i}", f"q {i}") for i in range(3)])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    assert len(claude.batches()) == 1
    assert claude.faults.overloaded_creates == 0 and claude.faults.overloaded_retrieves == 0


def _wait_for(cond: Any, what: str, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_cancel_claude_batch(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "c.jsonl", [cline(f"c{i}", f"q {i}") for i in range(4)])
    submit = batchd.popen("submit", str(src), "--output", str(batchd.out))
    # each wait has its own bound and fails loudly: a shared, silent one let a slow `cancel`
    # start (under load) fall through to advance_all, so the batch ended before the cancel
    _wait_for(lambda: bool(claude.batches()), "the submit's batch")
    time.sleep(0.3)  # let the submit record the batch
    run_id = next(d.name for d in (batchd.home / "locks").iterdir()).removesuffix(".lock")
    cancel = batchd.popen("cancel", run_id)
    _wait_for(lambda: claude.batches()[0]["processing_status"] == "canceling", "the cancel")
    claude.advance_all()
    _, cancel_err = cancel.communicate(timeout=60)
    _, submit_err = submit.communicate(timeout=60)
    assert cancel.returncode == 4, cancel_err
    assert submit.returncode == 4, submit_err
    assert Counter(r["status"] for r in batchd.results()) == {"succeeded": 2, "canceled": 2}


def test_prompt_cache_marks_shared_prefix_and_costs_it(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "pc.jsonl",
        [cline(f"p{i}", f"question {i}", system=LONG_SYSTEM) for i in range(5)],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    for sent in claude.requests_seen():
        system = sent["params"]["system"]
        assert system[-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    rows = batchd.results()
    writes = [r for r in rows if r["cache_write_tokens"]]
    reads = [r for r in rows if r["cached_input_tokens"]]
    assert len(writes) == 1 and len(reads) == 4  # first request writes, the others read
    w, r = writes[0], reads[0]
    price_in = 3.00 / 1e6  # claude-sonnet-4-5 input, USD per token
    price_out = 15.00 / 1e6
    plain_w = w["input_tokens"] - w["cache_write_tokens"]
    assert w["cost_usd"] == pytest.approx(
        0.5
        * (
            plain_w * price_in
            + w["cache_write_tokens"] * price_in * 2.0
            + w["output_tokens"] * price_out
        )
    )
    plain_r = r["input_tokens"] - r["cached_input_tokens"]
    assert r["cost_usd"] == pytest.approx(
        0.5
        * (
            plain_r * price_in
            + r["cached_input_tokens"] * 0.30 / 1e6
            + r["output_tokens"] * price_out
        )
    )
    costs = batchd.costs()
    saving = sum(c["prompt_cache_savings_usd"] for c in costs)
    assert saving > 0
    assert sum(c["cost_usd"] for c in costs) == pytest.approx(sum(x["cost_usd"] for x in rows))
    report = batchd.run("report", batchd.only_run_dir().name)
    assert report.returncode == 0 and "prompt cache: saved" in report.stdout


def test_no_prompt_cache_flag_and_own_cache_control_untouched(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    own = cline(
        "own",
        "mine",
        system=[{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
    )
    src = write_jsonl(
        tmp_path / "n.jsonl",
        [cline(f"n{i}", f"q {i}", system=LONG_SYSTEM) for i in range(4)] + [own],
    )
    proc = batchd.submit(src, "--no-prompt-cache")
    assert proc.returncode == 0, proc.stderr
    sent = {s["params"]["messages"][-1]["content"]: s["params"] for s in claude.requests_seen()}
    assert all(isinstance(sent[f"q {i}"]["system"], str) for i in range(4))
    assert sent["mine"] == own["params"]


def test_kill_between_create_and_record_reconciles_by_request_ids(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "k.jsonl", [cline(f"k{i}", f"q {i}") for i in range(5)])
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_client(_batch: dict[str, Any]) -> None:
        claude.faults.after_create = None
        os.kill(victim["proc"].pid, signal.SIGKILL)

    claude.faults.after_create = kill_client
    victim["proc"] = batchd.popen("submit", str(src), "--output", str(batchd.out))
    victim["proc"].wait(timeout=60)
    assert victim["proc"].returncode == -signal.SIGKILL
    assert len(claude.batches()) == 1
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    assert len(claude.batches()) == 1  # proven by its request ids, not recreated
    assert [r["status"] for r in batchd.results()] == ["succeeded"] * 5


def test_missing_anthropic_key_names_the_variable(batchd: Batchd, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "k.jsonl", [cline("k", "hello")])
    proc = batchd.submit(src, ANTHROPIC_API_KEY="")
    assert proc.returncode == 1
    assert "ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert ANTHROPIC_KEY not in proc.stderr


def test_deadline_cuts_claude_batch_lines_end_expired(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    claude.set_step_mode(manual=True)
    src = write_jsonl(tmp_path / "d.jsonl", [cline(f"d{i}", f"q {i}") for i in range(4)])
    # turnaround_s 0: trust the vendor to finish before a 6 s deadline (the planner would
    # otherwise plan these lines straight to the synchronous tiers: the batch turnaround prior
    # is minutes); fallback none: no deadline guard, unfinished lines end expired as before.
    # 6 s: the batch is created before it even on a loaded machine
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
        not claude.batches() or claude.batches()[0]["processing_status"] != "canceling"
    ):
        time.sleep(0.05)
    claude.advance_all()
    _, err = submit.communicate(timeout=60)
    assert submit.returncode == 3, err
    assert Counter(r["status"] for r in batchd.results()) == {"succeeded": 2, "expired": 2}
    assert len(claude.batches()) == 1  # past the deadline: nothing is resubmitted
