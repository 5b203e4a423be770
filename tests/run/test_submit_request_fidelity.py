"""`batchd submit` with structured outputs, tools, images and reasoning on Claude and OpenAI,
against both emulators: one answer shape (`output_text`, `tool_calls`, `schema_valid`,
`reasoning_tokens`) whatever the vendor."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import Batchd, chat, write_jsonl

NATIVE = "claude-sonnet-4-5"  # native structured outputs (output_config.format)
FORCED = "claude-opus-4-1"  # none: answered through a forced tool
GPT = "gpt-5.4-mini"
PRICE_TOML = """
[prices."claude-opus-4-1"]
vendor = "anthropic"
input_per_mtok = 15.0
output_per_mtok = 75.0
cached_input_per_mtok = 1.5
"""
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def _rows(batchd: Batchd, tmp_path: Path, lines: list[Any]) -> dict[str, dict[str, Any]]:
    (tmp_path / "batchd.toml").write_text(PRICE_TOML)
    proc = batchd.submit(write_jsonl(tmp_path / "in.jsonl", lines))
    assert proc.returncode in (0, 3), proc.stderr
    rows = batchd.results()
    assert len(rows) == len(lines)
    return {r["custom_id"]: r for r in rows}


def test_schema_lines_return_valid_json_both_ways_on_claude_and_on_openai(
    batchd: Batchd,
    emulator: OpenAIBatchEmulator,
    claude: AnthropicBatchEmulator,
    tmp_path: Path,
) -> None:
    rows = _rows(
        batchd,
        tmp_path,
        [
            chat("native", "extract", model=NATIVE, response_format=SCHEMA_FORMAT),
            chat("forced", "extract", model=FORCED, response_format=SCHEMA_FORMAT),
            chat("gpt", "extract", model=GPT, response_format=SCHEMA_FORMAT),
            chat("bad", "extract [[schema:invalid]]", model=NATIVE, response_format=SCHEMA_FORMAT),
            chat("bad-forced", "x [[schema:invalid]]", model=FORCED, response_format=SCHEMA_FORMAT),
            chat("bad-gpt", "x [[schema:invalid]]", model=GPT, response_format=SCHEMA_FORMAT),
            chat("object", "any json", model=NATIVE, response_format={"type": "json_object"}),
            chat("plain", "no schema", model=NATIVE),
        ],
    )
    for cid in ("native", "forced", "gpt"):
        r = rows[cid]
        assert r["status"] == "succeeded", r
        jsonschema.validate(json.loads(r["output_text"]), PERSON)
        assert r["schema_valid"] is True and r["tool_calls"] is None
        assert r["finish_reason"] == "stop"
    for cid in ("bad", "bad-forced", "bad-gpt"):
        assert rows[cid]["status"] == "succeeded" and rows[cid]["schema_valid"] is False, rows[cid]
    assert isinstance(json.loads(rows["object"]["output_text"]), dict)
    assert rows["object"]["schema_valid"] is None and rows["plain"]["schema_valid"] is None
    # How each way reached Claude: native output_config, or one forced tool.
    native = [r["params"] for r in claude.requests_seen() if r["params"]["model"] == NATIVE]
    assert (
        sum(
            p.get("output_config") == {"format": {"type": "json_schema", "schema": PERSON}}
            for p in native
        )
        == 2
    )  # "native" and "bad"
    assert not any(p.get("tools") for p in native if "output_config" in p)
    forced = [r["params"] for r in claude.requests_seen() if r["params"]["model"] == FORCED]
    assert all(p["tool_choice"]["type"] == "tool" and "output_config" not in p for p in forced)
    assert all(p["tools"][0]["input_schema"] == PERSON for p in forced)


def test_tool_calls_have_one_shape_on_claude_and_openai_and_results_round_trip(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    history = [
        *ask,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]

    def line(cid: str, model: str, messages: list[Any], **body: Any) -> dict[str, Any]:
        return {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": messages, "tools": [WEATHER], **body},
        }

    rows = _rows(
        batchd,
        tmp_path,
        [
            line("claude-call", NATIVE, ask, tool_choice="required"),
            line("gpt-call", GPT, ask, tool_choice="required"),
            line("claude-auto", NATIVE, ask),  # auto: the emulators call a tool named in the text
            line(
                "claude-named",
                NATIVE,
                ask,
                tool_choice={"type": "function", "function": {"name": "weather"}},
                parallel_tool_calls=False,
            ),
            line("claude-back", NATIVE, history),
            line("gpt-back", GPT, history),
        ],
    )
    shapes = {}
    for cid in ("claude-call", "gpt-call", "claude-auto", "claude-named"):
        r = rows[cid]
        assert r["status"] == "succeeded" and r["finish_reason"] == "tool_calls", r
        calls = json.loads(r["tool_calls"])
        assert len(calls) == 1
        call = calls[0]
        assert call["type"] == "function" and call["function"]["name"] == "weather"
        assert isinstance(call["id"], str) and call["id"]
        assert json.loads(call["function"]["arguments"]) == {"city": "example"}
        shapes[cid] = (tuple(sorted(call)), tuple(sorted(call["function"])))
        assert r["output_text"] is None
    assert len(set(shapes.values())) == 1  # the same shape from both vendors
    for cid in ("claude-back", "gpt-back"):
        r = rows[cid]
        assert r["status"] == "succeeded" and r["tool_calls"] is None, r
        assert r["output_text"] == "echo: tool result: sunny, 21C"
        assert r["finish_reason"] == "stop"
    back = next(r["params"] for r in claude.requests_seen() if len(r["params"]["messages"]) == 3)
    assert back["messages"][1]["content"][0]["type"] == "tool_use"
    assert back["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": "sunny, 21C",
    }
    named = next(
        r["params"]
        for r in claude.requests_seen()
        if r["params"].get("tool_choice", {}).get("type") == "tool"
    )
    assert named["tool_choice"] == {
        "type": "tool",
        "name": "weather",
        "disable_parallel_tool_use": True,
    }


def test_images_reasoning_and_parameters_claude_lacks(
    batchd: Batchd, claude: AnthropicBatchEmulator, emulator: OpenAIBatchEmulator, tmp_path: Path
) -> None:
    def image(cid: str, url: str) -> dict[str, Any]:
        parts = [
            {"type": "text", "text": "describe"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": NATIVE, "messages": [{"role": "user", "content": parts}]},
        }

    not_png = base64.b64encode(b"GIF89a" + b"\0" * 8).decode()
    rows = _rows(
        batchd,
        tmp_path,
        [
            image("data-url", f"data:image/png;base64,{PNG}"),
            image("https-url", "https://example.com/cat.jpg"),
            image("wrong-bytes", f"data:image/png;base64,{not_png}"),  # the vendor refuses it
            image("bad-type", f"data:image/tiff;base64,{PNG}"),
            image("bad-base64", "data:image/png;base64,@@@"),
            image("http-url", "http://example.com/cat.jpg"),
            chat("think", "ponder this", model=NATIVE, reasoning_effort="low", max_tokens=100),
            chat("gpt-think", "ponder", model=GPT, reasoning_effort="low", n=2, seed=7),
            chat("think-temp", "x", model=NATIVE, reasoning_effort="high", temperature=0.2),
            chat("seed", "x", model=NATIVE, seed=7),
            chat("n", "x", model=NATIVE, n=2),
            chat("logprobs", "x", model=NATIVE, logprobs=True),
        ],
    )
    for cid in ("data-url", "https-url"):
        assert rows[cid]["status"] == "succeeded" and rows[cid]["output_text"] == "echo: describe"
    sent = [r["params"] for r in claude.requests_seen()]
    sources = [
        b["source"]
        for p in sent
        for b in p["messages"][0]["content"]
        if isinstance(b, dict) and b.get("type") == "image"
    ]
    assert {"type": "base64", "media_type": "image/png", "data": PNG} in sources
    assert {"type": "url", "url": "https://example.com/cat.jpg"} in sources
    wrong = rows["wrong-bytes"]
    assert wrong["status"] == "failed" and "media type" in wrong["error_message"]
    for cid, words in (("bad-type", "image/tiff"), ("bad-base64", "base64"), ("http-url", "https")):
        r = rows[cid]
        assert (r["status"], r["error_type"]) == ("invalid", "unsupported_parameter"), r
        assert words in r["error_message"]
    think = rows["think"]
    assert think["status"] == "succeeded" and think["output_text"] == "echo: ponder this"
    assert think["reasoning_tokens"] > 0 and think["output_tokens"] > think["reasoning_tokens"]
    params = next(p for p in sent if p.get("thinking"))
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert params["max_tokens"] == 4096 + 100  # raised above the budget, as Anthropic requires
    gpt = rows["gpt-think"]
    assert gpt["status"] == "succeeded" and gpt["reasoning_tokens"] == 32
    assert len(json.loads(gpt["response_json"])["choices"]) == 2
    body = next(r["body"] for r in emulator.requests_seen() if r["body"].get("seed"))
    assert (body["n"], body["seed"], body["reasoning_effort"]) == (2, 7, "low")
    assert "temperature" in rows["think-temp"]["error_message"]
    for cid in ("seed", "n", "logprobs"):
        r = rows[cid]
        # the capability table refuses it, naming the target and one that can
        assert r["error_type"] == "unsupported_parameter", r
        assert r["error_message"].startswith("claude-"), r
        assert r["error_message"].endswith(" can"), r


def test_the_deadline_guards_messages_calls_use_the_same_translation(
    batchd: Batchd, claude: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    """Guard time at once (margin = the whole window): every line goes through the Messages
    API synchronously, with the params the batch would have had, and the same answer shape."""
    (tmp_path / "batchd.toml").write_text(PRICE_TOML)
    lines = [
        chat("native", "extract", model=NATIVE, response_format=SCHEMA_FORMAT),
        chat("forced", "extract", model=FORCED, response_format=SCHEMA_FORMAT),
        chat("bad", "x [[schema:invalid]]", model=NATIVE, response_format=SCHEMA_FORMAT),
        chat("call", "weather?", model=NATIVE, tools=[WEATHER], tool_choice="required"),
        chat("think", "ponder", model=NATIVE, reasoning_effort="minimal"),
    ]
    proc = batchd.submit(
        write_jsonl(tmp_path / "in.jsonl", lines),
        "--within",
        "60s",
        "--guard-margin-s",
        "60",
        BATCHD_PLANNER_TURNAROUND_S="0",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["custom_id"]: r for r in batchd.results()}
    assert {r["tier"] for r in rows.values()} == {"realtime"} and not claude.batches()
    assert rows["native"]["schema_valid"] is True and rows["forced"]["schema_valid"] is True
    assert rows["bad"]["schema_valid"] is False
    jsonschema.validate(json.loads(rows["forced"]["output_text"]), PERSON)
    assert json.loads(rows["call"]["tool_calls"])[0]["function"]["name"] == "weather"
    assert rows["think"]["reasoning_tokens"] > 0
    sent = [c["params"] for c in claude.sync_calls if c["status"] == 200]
    assert any(p.get("output_config") for p in sent)
    assert any(p.get("thinking") == {"type": "enabled", "budget_tokens": 1024} for p in sent)
