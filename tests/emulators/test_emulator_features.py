"""The emulators' tools, structured outputs, images and thinking, driven by the real SDKs, as
the vendors document them."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.support.helpers import ANTHROPIC_KEY, API_KEY

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 3}, "s": {"enum": ["x", "y"]}},
    "required": ["n", "s"],
    "additionalProperties": False,
}
TOOL = {
    "name": "lookup",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()


def _claude(emu: AnthropicBatchEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=emu.base_url, max_retries=0)


def _msg(client: anthropic.Anthropic, **params: Any) -> Any:
    base = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "q"}],
    }
    return client.messages.create(**{**base, **params})


def test_claude_structured_outputs_tools_and_thinking(claude: AnthropicBatchEmulator) -> None:
    client = _claude(claude)
    out = _msg(client, output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    jsonschema.validate(json.loads(out.content[0].text), SCHEMA)
    with pytest.raises(anthropic.BadRequestError, match="does not support structured outputs"):
        _msg(
            client,
            model="claude-opus-4-1",
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        )
    with pytest.raises(anthropic.BadRequestError, match="JSON schema is invalid"):
        _msg(client, tools=[{**TOOL, "input_schema": {"type": "object", "properties": 3}}])
    call = _msg(client, tools=[TOOL], tool_choice={"type": "any"})
    assert call.stop_reason == "tool_use" and call.content[0].name == "lookup"
    assert call.content[0].id.startswith("toolu_") and isinstance(call.content[0].input, dict)
    assert _msg(client, tools=[TOOL]).stop_reason == "end_turn"  # auto: "lookup" not asked for
    think = _msg(client, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024})
    assert think.content[0].type == "thinking" and think.content[1].type == "text"
    assert think.usage.output_tokens_details.thinking_tokens > 0
    for bad, words in (
        ({"max_tokens": 1024}, "greater than `thinking.budget_tokens`"),
        ({"max_tokens": 2000, "extra_body": {"temperature": 0.5}}, "temperature"),
        ({"max_tokens": 2000, "tools": [TOOL], "tool_choice": {"type": "any"}}, "forces tool use"),
    ):
        with pytest.raises(anthropic.BadRequestError, match=words):
            _msg(client, thinking={"type": "enabled", "budget_tokens": 1024}, **bad)
    with pytest.raises(anthropic.BadRequestError, match="1024"):
        _msg(client, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 100})


def test_claude_bad_images_fail_their_own_request_in_a_batch(
    claude: AnthropicBatchEmulator,
) -> None:
    client = _claude(claude)

    def req(cid: str, source: dict[str, Any]) -> dict[str, Any]:
        content = [{"type": "image", "source": source}, {"type": "text", "text": "what"}]
        return {
            "custom_id": cid,
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 9,
                "messages": [{"role": "user", "content": content}],
            },
        }

    batch = client.messages.batches.create(
        requests=[
            req("ok", {"type": "base64", "media_type": "image/png", "data": PNG}),
            req("url", {"type": "url", "url": "https://example.com/a.png"}),
            req("jpeg", {"type": "base64", "media_type": "image/jpeg", "data": PNG}),
            req("b64", {"type": "base64", "media_type": "image/png", "data": "@@@@"}),
            req("tiff", {"type": "base64", "media_type": "image/tiff", "data": PNG}),
        ]  # type: ignore[list-item]
    )
    claude.advance_all()
    got = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert got["ok"].type == "succeeded" and got["url"].type == "succeeded"
    assert "does not match the provided media type" in got["jpeg"].error.error.message
    assert "not valid base64" in got["b64"].error.error.message
    assert "media_type" in got["tiff"].error.error.message


def test_openai_tools_json_schema_n_and_reasoning(emulator: OpenAIBatchEmulator) -> None:
    client = openai.OpenAI(api_key=API_KEY, base_url=emulator.base_url, max_retries=0)
    tools = [
        {"type": "function", "function": {"name": "lookup", "parameters": TOOL["input_schema"]}}
    ]
    base: dict[str, Any] = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": "q"}]}
    call = client.chat.completions.create(**base, tools=tools, tool_choice="required")  # type: ignore[arg-type]
    choice = call.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "lookup"  # type: ignore[index, union-attr]
    assert isinstance(json.loads(choice.message.tool_calls[0].function.arguments), dict)  # type: ignore[index, union-attr]
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}
    out = client.chat.completions.create(**base, response_format=fmt, n=3, reasoning_effort="low")  # type: ignore[arg-type]
    assert len(out.choices) == 3
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), SCHEMA)
    assert out.usage.completion_tokens_details.reasoning_tokens == 48  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError, match=r"json_schema\.name"):
        client.chat.completions.create(
            **base, response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}}
        )  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(
            **base, tools=tools, tool_choice={"type": "function", "function": {"name": "nope"}}
        )  # type: ignore[arg-type]
