"""OpenAI tool-calling transcripts for Claude: tool_calls -> tool_use, tool turns ->
tool_result, tools and tool_choice translated; what has no Claude equivalent is named, never
dropped. The translated params are accepted by the Anthropic emulator, which validates the
tool shapes as Anthropic documents them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from batchd.backends.anthropic_batch import to_claude_params
from batchd.backends.base import UnsupportedRequest
from batchd.requests import Request, parse_request
from tests.emulators.anthropic_batch import AnthropicBatchEmulator

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-test"


def _req(messages: list[dict[str, Any]], fmt: str = "openai", **body: Any) -> Request:
    if fmt == "openai":
        obj: dict[str, Any] = {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": messages, **body},
        }
    else:
        obj = {"id": "a", "model": MODEL, "messages": messages, **body}
    r = parse_request(obj, 1, "t")
    assert isinstance(r, Request), r
    return r


def call(call_id: str, name: str = "weather", args: Any = '{"city": "Paris"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


WEATHER_TOOL = {
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
TRANSCRIPT = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [call("c1"), call("c2", args='{"city": "Rome"}')],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
    {"role": "user", "content": "And tomorrow?"},
]


def test_tool_calls_and_tool_turns_become_tool_use_and_tool_result() -> None:
    p = to_claude_params(_req(TRANSCRIPT, tools=[WEATHER_TOOL], tool_choice="auto"), 100)
    assert p["system"] == "Use tools."
    assert p["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},  # text and calls both kept
                {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",  # both results, then the next question, in one user turn
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "c2",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert p["tools"] == [
        {
            "name": "weather",
            "description": "Current weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert p["tool_choice"] == {"type": "auto"}


def test_content_null_with_tool_calls() -> None:
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", args="{}")]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]
    p = to_claude_params(_req(msgs, tools=[WEATHER_TOOL]), 100)
    assert p["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "weather", "input": {}}
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expect"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            None,
            {"type": "tool", "name": "weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_translation(choice: Any, parallel: Any, expect: dict[str, Any]) -> None:
    extra: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    p = to_claude_params(_req([{"role": "user", "content": "q"}], **extra), 100)
    assert p["tool_choice"] == expect


def test_strict_and_schemaless_tools() -> None:
    tools = [{"type": "function", "function": {"name": "now", "strict": True}}]
    p = to_claude_params(_req([{"role": "user", "content": "q"}], tools=tools), 100)
    assert p["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}, "strict": True}
    ]


def test_native_lines_keep_claude_shaped_tools() -> None:
    claude_tool = {"name": "w", "input_schema": {"type": "object"}}
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    p = to_claude_params(
        _req(
            [{"role": "user", "content": "q"}],
            fmt="native",
            tools=[claude_tool, server_tool, WEATHER_TOOL],
            tool_choice={"type": "any"},
        ),
        100,
    )
    assert p["tools"][:2] == [claude_tool, server_tool]
    assert p["tools"][2]["name"] == "weather" and p["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("messages", "body", "named"),
    [
        ([{"role": "user", "content": "q", "name": "alice"}], {}, "messages[0].name"),
        (
            [{"role": "system", "content": "s", "name": "x"}, {"role": "user", "content": "q"}],
            {},
            "messages[0].name",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a", "audio": {"id": "x"}},
            ],
            {},
            "messages[1].audio",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "function_call": {"name": "f"}},
            ],
            {},
            "messages[1].function_call",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [call("c", args="{oops")]},
            ],
            {},
            "arguments is not a JSON object",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [call("c", args="[1]")]},
            ],
            {},
            "arguments is not a JSON object",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "f"}}],
                },
            ],
            {},
            "tool_calls[0].id",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"type": "custom", "id": "c"}],
                },
            ],
            {},
            "'custom'",
        ),
        ([{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], {}, "tool_call_id"),
        ([{"role": "function", "name": "f", "content": "r"}], {}, "'function'"),
        (
            [{"role": "user", "content": "q"}],
            {"tools": [{"type": "custom", "name": "x"}]},
            "custom",
        ),
        ([{"role": "user", "content": "q"}], {"tools": "weather"}, "tools must be a list"),
        (
            [{"role": "user", "content": "q"}],
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "parameters",
        ),
        (
            [{"role": "user", "content": "q"}],
            {"tools": [{"type": "function", "function": {"name": "f", "extra": 1}}]},
            "function.extra",
        ),
        ([{"role": "user", "content": "q"}], {"tool_choice": "sometimes"}, "tool_choice"),
        (
            [{"role": "user", "content": "q"}],
            {"tool_choice": "none", "parallel_tool_calls": False},
            "parallel_tool_calls",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            {},
            "image_url",
        ),
    ],
)
def test_what_claude_cannot_take_is_named(
    messages: list[dict[str, Any]], body: dict[str, Any], named: str
) -> None:
    with pytest.raises(UnsupportedRequest, match=named.replace("[", r"\[").replace("]", r"\]")):
        to_claude_params(_req(messages, **body), 100)


# --- the translated params, sent to the emulator through the real SDK ----------------------


@pytest.fixture
def client() -> Iterator[anthropic.Anthropic]:
    with AnthropicBatchEmulator() as emu:
        emu.params_validation = "async"  # as Anthropic does: per request, in the results
        yield anthropic.Anthropic(api_key=KEY, base_url=emu.base_url, max_retries=0)


def _run(client: anthropic.Anthropic, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    batch = client.messages.batches.create(
        requests=[{"custom_id": k, "params": p} for k, p in params.items()]  # type: ignore[misc]
    )
    for _ in range(20):
        if client.messages.batches.retrieve(batch.id).processing_status == "ended":
            break
    return {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}


def test_emulator_accepts_translated_tool_transcripts(client: anthropic.Anthropic) -> None:
    msgs_null = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]
    params = {
        "full": to_claude_params(
            _req(TRANSCRIPT, tools=[WEATHER_TOOL], tool_choice="required"), 50
        ),
        "null": to_claude_params(_req(msgs_null, tools=[WEATHER_TOOL]), 50),
        "named": to_claude_params(
            _req(
                [{"role": "user", "content": "q"}],
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "weather"}},
                parallel_tool_calls=False,
            ),
            50,
        ),
    }
    got = _run(client, params)
    assert {k: r.type for k, r in got.items()} == dict.fromkeys(params, "succeeded"), got


def test_emulator_refuses_tool_shapes_anthropic_refuses(client: anthropic.Anthropic) -> None:
    """So the test above can fail: the emulator checks what the Messages API checks."""
    ok = to_claude_params(_req(TRANSCRIPT, tools=[WEATHER_TOOL]), 50)
    unanswered = json.loads(json.dumps(ok))
    del unanswered["messages"][2]["content"][1]  # c2 never answered
    stray = json.loads(json.dumps(ok))
    stray["messages"][2]["content"].insert(0, {"type": "tool_result", "tool_use_id": "nope"})
    in_user = {**ok, "messages": [{"role": "user", "content": ok["messages"][1]["content"][1:]}]}
    bad_input = json.loads(json.dumps(ok))
    bad_input["messages"][1]["content"][1]["input"] = "Paris"
    no_schema = {**ok, "tools": [{"name": "weather"}]}
    bad_choice = {**ok, "tool_choice": {"type": "tool", "name": "missing"}}
    got = _run(
        client,
        {
            "unanswered": unanswered,
            "stray": stray,
            "in_user": in_user,
            "bad_input": bad_input,
            "no_schema": no_schema,
            "bad_choice": bad_choice,
        },
    )
    messages = {k: r.error.error.message for k, r in got.items() if r.type == "errored"}
    assert set(messages) == set(got), got
    assert "without `tool_result`" in messages["unanswered"]
    assert "unexpected `tool_use_id`" in messages["stray"]
    assert "assistant turns" in messages["in_user"]
    assert "input" in messages["bad_input"]
    assert "input_schema" in messages["no_schema"]
    assert "not found in tools" in messages["bad_choice"]
