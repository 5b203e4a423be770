"""`batchd submit` with Gemini models against the Gemini Batch emulator (real google-genai SDK)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batchd.state.sqlite_store import SqliteStore
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.gemini_batch import GeminiBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"


def _lines(n: int, model: str = FLASH) -> list[dict[str, Any]]:
    return [chat(f"k{i}", f"request number {i}", model=model, max_tokens=20) for i in range(n)]


def test_gemini_run_end_to_end_rows_and_costs(
    batchd: Batchd, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    gemini.thoughts_tokens = 4
    src = write_jsonl(
        tmp_path / "g.jsonl",
        [
            chat("plain", "one two three", model=FLASH),
            chat("short", "alpha beta gamma delta", model=PRO, max_tokens=2),
            chat("stopped", "left STOP right", model=FLASH, stop=["STOP"]),
            chat("bad", "x", model=FLASH, logprobs=True),
            chat("invalid-line", "[[error:invalid]] here", model=FLASH),
            chat("filtered", "[[safety]] text", model=FLASH),
            {
                "id": "native",
                "model": FLASH,
                "system": "Be terse.",
                "prompt": "native words",
                "top_k": 3,
            },
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr  # one line cannot be sent, one failed at Gemini
    assert "SECRET" not in proc.stderr + proc.stdout
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert len(rows) == 7
    plain = rows["plain"]
    assert (plain["backend"], plain["model_used"], plain["status"]) == (
        "gemini",
        FLASH,
        "succeeded",
    )
    assert plain["output_text"] == "echo: one two three" and plain["finish_reason"] == "stop"
    assert plain["output_tokens"] == 4 + 4  # 4 words + 4 thinking tokens, billed as output
    assert '"usageMetadata"' in plain["response_json"]
    assert rows["short"]["finish_reason"] == "length"
    assert rows["short"]["output_text"] == "echo: alpha"
    assert rows["stopped"]["output_text"] == "echo: left "
    assert rows["bad"]["status"] == "invalid"
    assert rows["bad"]["error_type"] == "unsupported_parameter"
    assert "logprobs" in rows["bad"]["error_message"]
    failed = rows["invalid-line"]
    assert failed["status"] == "failed" and failed["error_type"] == "invalid_argument"
    assert rows["filtered"]["finish_reason"] == "content_filter"
    assert rows["native"]["output_text"] == "echo: native words"
    # What Gemini received: translated requests keyed by batchd's ids, never the user's.
    sent = {key: req for key, req in gemini.requests_seen()}
    assert len(sent) == 6
    native = next(
        r for r in sent.values() if r["contents"][0]["parts"][0]["text"] == "native words"
    )
    assert native["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert native["generationConfig"] == {"topK": 3}
    assert not {"plain", "short", "native"} & set(sent)
    assert all(b["metadata"]["displayName"].startswith("batchd-run-") for b in gemini.batches())
    # Costs: batch price (half the list price) from the usage metadata.
    price_in, price_out = 0.30, 2.50  # gemini-2.5-flash, USD per 1M tokens
    expected = (plain["input_tokens"] * price_in + plain["output_tokens"] * price_out) / 2e6
    assert plain["cost_usd"] == pytest.approx(expected)
    assert plain["cost_usd"] == pytest.approx(plain["baseline_cost_usd"] / 2)
    costs = batchd.costs()
    assert sum(c["cost_usd"] for c in costs) == pytest.approx(
        sum(r["cost_usd"] for r in rows.values())
    )


def test_big_chunk_goes_through_the_files_api(
    batchd: Batchd, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "g.jsonl", _lines(6))
    proc = batchd.submit(src, BATCHD_GEMINI_INLINE_MAX_BYTES="200")
    assert proc.returncode == 0, proc.stderr
    assert gemini.inline_batches() == [False]
    assert "fileName" in gemini.batches()[0]["metadata"]["inputConfig"]
    rows = batchd.results()
    assert [r["output_text"] for r in rows] == [f"echo: request number {i}" for i in range(6)]


def test_expired_batch_and_429s(
    batchd: Batchd, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    gemini.faults.expire_batches = 1
    gemini.faults.rate_limit_creates = 1
    gemini.faults.rate_limit_gets = 1
    src = write_jsonl(tmp_path / "g.jsonl", _lines(4))
    # expired lines were not billed: they are sent again even with no attempt left (issue 16)
    proc = batchd.submit(src, BATCHD_MAX_ATTEMPTS="1")
    rows = batchd.results()
    assert proc.returncode == 0, proc.stderr
    batches = gemini.batches()
    assert len(batches) == 2  # the 429 on create was retried in place; the 2nd is the resend
    assert Counter(r["status"] for r in rows) == {"succeeded": 4}
    assert all(r["backend"] == "gemini" for r in rows)


def test_kill_between_vendor_create_and_record(
    batchd: Batchd, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    src = write_jsonl(tmp_path / "jobs.jsonl", _lines(6))
    victim: dict[str, subprocess.Popen[str]] = {}

    def kill_client(_op: dict[str, Any]) -> None:
        gemini.faults.after_create = None
        os.kill(victim["proc"].pid, signal.SIGKILL)

    gemini.faults.after_create = kill_client
    victim["proc"] = batchd.popen("submit", str(src), "--output", str(batchd.out))
    victim["proc"].wait(timeout=60)
    assert victim["proc"].returncode == -signal.SIGKILL
    assert len(gemini.batches()) == 1  # Gemini has a batch the client never recorded
    again = batchd.submit(src)
    assert again.returncode == 0, again.stderr
    assert "Resuming" in again.stderr
    assert len(gemini.batches()) == 1  # matched by display_name, not created again
    rows = batchd.results()
    assert [r["output_text"] for r in rows] == [f"echo: request number {i}" for i in range(6)]
    sent = Counter(key for key, _ in gemini.requests_seen())
    assert len(sent) == 6 and set(sent.values()) == {1}


def test_mixed_openai_claude_gemini_in_one_run(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    gemini: GeminiBatchEmulator,
    tmp_path: Path,
) -> None:
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            chat("gpt", "openai question"),
            chat("claude", "claude question", model="claude-sonnet-4-5"),
            chat("gem", "gemini question", model=FLASH),
            {
                "custom_id": "claude-native",
                "params": {
                    "model": FLASH,  # Anthropic-format line for a Gemini model
                    "max_tokens": 9,
                    "system": "sys",
                    "messages": [{"role": "user", "content": "from anthropic format"}],
                },
            },
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert {k: r["backend"] for k, r in rows.items()} == {
        "gpt": "openai",
        "claude": "anthropic",
        "gem": "gemini",
        "claude-native": "gemini",
    }
    assert rows["gem"]["output_text"] == "echo: gemini question"
    assert rows["claude"]["output_text"] == "echo: claude question"
    assert rows["claude-native"]["output_text"] == "echo: from anthropic format"
    assert len(emulator.batches()) == len(claude.batches()) == len(gemini.batches()) == 1


def test_alias_with_a_gemini_target(
    batchd: Batchd, gemini: GeminiBatchEmulator, tmp_path: Path
) -> None:
    # gemini-2.5-flash-lite is the cheaper target: the planner picks it for these lines.
    (tmp_path / "batchd.toml").write_text(
        '[models.cheap]\ntargets = ["openai:gpt-5.4-nano", "gemini:gemini-2.5-flash-lite"]\n'
    )
    src = write_jsonl(tmp_path / "a.jsonl", [chat("a", "via alias", model="cheap")])
    proc = batchd.submit(src)
    assert proc.returncode == 0, proc.stderr
    (row,) = batchd.results()
    assert (row["backend"], row["model_used"]) == ("gemini", "gemini-2.5-flash-lite")
    assert gemini.batches()[0]["metadata"]["model"] == "models/gemini-2.5-flash-lite"


def test_missing_key_is_named(batchd: Batchd, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "g.jsonl", _lines(1))
    env = {k: v for k, v in batchd.env.items() if k != "GEMINI_API_KEY"}
    proc = subprocess.run(
        batchd.argv("submit", str(src), "--output", str(batchd.out)),
        env=env,
        cwd=batchd.tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "GEMINI_API_KEY" in proc.stderr


def test_alias_targets_checked_against_the_price_book(batchd: Batchd, tmp_path: Path) -> None:
    (tmp_path / "batchd.toml").write_text(
        '[models.wrong]\ntargets = ["gemini:gpt-5.4-nano", "openai:gpt-5.4-mini"]\n'
    )
    src = write_jsonl(tmp_path / "a.jsonl", [{"model": "wrong", "prompt": "x"}])
    proc = batchd.run("plan", str(src), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["stats"]["invalid_by_type"] == {"bad_alias": 1}
    (tmp_path / "batchd.toml").write_text('[models.typo]\ntargets = ["gemeni:gemini-2.5-pro"]\n')
    bad = batchd.run("plan", str(src))
    assert bad.returncode != 0 and "gemini:<model>" in bad.stderr


GEMINI_REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "native gemini words"}]}],
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "generationConfig": {"maxOutputTokens": 30, "temperature": 0.2},
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
}


def test_gemini_native_lines_pass_through_unchanged_in_a_mixed_run(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    gemini: GeminiBatchEmulator,
    tmp_path: Path,
) -> None:
    (tmp_path / "batchd.toml").write_text(
        '[models.cheap]\ntargets = ["openai:gpt-5.4-nano", "gemini:gemini-2.5-flash-lite"]\n'
    )
    batch_file_line = {  # Gemini's own batch-file shape, with the model it needs
        "key": "file-shape",
        "model": FLASH,
        "request": {"contents": [{"parts": [{"text": "from a gemini batch file"}]}]},
    }
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            chat("gpt", "openai question"),
            chat("claude", "claude question", model="claude-sonnet-4-5"),
            {"id": "native", "model": FLASH, **GEMINI_REQUEST},
            batch_file_line,
            {"id": "wrong-target", "model": "gpt-5.4-nano", **GEMINI_REQUEST},
            {"id": "via-alias", "model": "cheap", "contents": [{"parts": [{"text": "alias"}]}]},
            {"key": "no-model", "request": {"contents": [{"parts": [{"text": "x"}]}]}},
        ],
    )
    proc = batchd.submit(src)
    assert proc.returncode == 3, proc.stderr  # two invalid lines
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert [r["custom_id"] for r in batchd.results()] == [
        "gpt",
        "claude",
        "native",
        "file-shape",
        "wrong-target",
        "via-alias",
        "no-model",
    ]
    assert {k: r["backend"] for k, r in rows.items() if r["status"] == "succeeded"} == {
        "gpt": "openai",
        "claude": "anthropic",
        "native": "gemini",
        "file-shape": "gemini",
        "via-alias": "gemini",
    }
    assert rows["native"]["output_text"] == "echo: native gemini words"
    assert rows["file-shape"]["output_text"] == "echo: from a gemini batch file"
    wrong = rows["wrong-target"]
    assert (wrong["status"], wrong["error_type"]) == ("invalid", "unsupported_parameter")
    assert wrong["error_message"] == (
        "gpt-5.4-nano cannot take Gemini-native requests (contents); gemini-2.5-flash-lite can"
    )
    assert rows["no-model"]["error_type"] == "missing_model"
    # What Gemini received is the request exactly as the line gave it.
    sent = [req for _, req in gemini.requests_seen()]
    assert GEMINI_REQUEST in sent
    assert batch_file_line["request"] in sent
    assert len(emulator.batches()) == len(claude.batches()) == 1
    # The Gemini batches were timed: turnaround observations like every vendor's.
    store = SqliteStore(batchd.home / "state.db")
    turn = {k: v for k, v in store.observations().items() if k.startswith("turn|gemini|")}
    store.close()
    assert sum(den for _, den in turn.values()) == len(gemini.batches()) == 2
    # A second run of the same file is answered from the cache, the native lines included.
    again = batchd.submit(src, "--output", str(tmp_path / "again"), "--within", "48h")
    assert again.returncode == 3, again.stderr
    assert len(gemini.batches()) == 2
    (run_dir,) = (tmp_path / "again").iterdir()
    cached = {r["custom_id"]: r["cache"] for r in batchd.results(run_dir)}
    assert cached["native"] == cached["file-shape"] == cached["via-alias"] == "exact"
