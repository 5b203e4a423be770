"""Responses bodies as chat for chat-only targets; what cannot be translated is named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchd.backends.base import UnsupportedRequest
from batchd.backends.responses_chat import as_chat, response_object, to_chat_body
from batchd.outcome import SUCCEEDED, Outcome
from batchd.requests import CHAT, Request, parse_request


def _req(**body: Any) -> Request:
    got = parse_request({"endpoint": "responses", "model": "claude-haiku-4-5", **body}, 1, "t")
    assert isinstance(got, Request), got
    return got


def test_translation_of_every_mapped_field() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sun"},
            {"type": "function_call_output", "call_id": "c2", "output": {"t": 20}},
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]},
        ],
        "instructions": "be brief",
        "max_output_tokens": 99,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "w"},
        "temperature": 0.5,
        "store": True,
        "metadata": {"a": "b"},
    }
    chat = to_chat_body(body, "Claude")
    assert chat["messages"][0] == {"role": "system", "content": "be brief"}
    assert chat["messages"][1]["content"] == [{"type": "text", "text": "weather?"}]
    assistant = chat["messages"][2]
    assert assistant["role"] == "assistant" and [c["id"] for c in assistant["tool_calls"]] == [
        "c1",
        "c2",
    ]
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "sun"}
    assert json.loads(chat["messages"][4]["content"]) == {"t": 20}
    assert chat["messages"][5]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/a.png"}}
    ]
    assert chat["max_tokens"] == 99 and chat["reasoning_effort"] == "low"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "object"}},
    }
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert chat["temperature"] == 0.5 and "store" not in chat and "metadata" not in chat


def test_as_chat_gives_a_chat_request() -> None:
    got = as_chat(_req(input="hi", instructions="sys"), "Claude")
    assert got.endpoint == CHAT
    assert got.body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "item_reference"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input_file"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
    ],
)
def test_what_has_no_chat_equivalent_is_refused_by_name(extra: dict[str, Any], named: str) -> None:
    fields = {"input": "hi", **extra}
    with pytest.raises(UnsupportedRequest, match=named) as err:
        as_chat(_req(**fields), "vLLM")
    assert "vLLM" in str(err.value) and "OpenAI" in str(err.value)


def test_embeddings_and_completions_are_refused_for_chat_targets() -> None:
    emb = parse_request({"endpoint": "embeddings", "model": "m", "input": "x"}, 1, "t")
    assert isinstance(emb, Request)
    with pytest.raises(UnsupportedRequest, match="no embeddings endpoint"):
        as_chat(emb, "Claude")


def test_response_object_from_the_common_shape() -> None:
    o = Outcome(
        status=SUCCEEDED,
        model_used="claude-haiku-4-5",
        output_text="hi",
        finish_reason="length",
        tool_calls=json.dumps(
            [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        ),
        input_tokens=5,
        output_tokens=9,
        reasoning_tokens=4,
    )
    r = response_object(o, "resp_1", 1700000000)
    assert r["object"] == "response" and r["status"] == "incomplete"
    assert r["incomplete_details"] == {"reason": "max_output_tokens"}
    assert r["output"][0]["content"][0] == {"type": "output_text", "text": "hi", "annotations": []}
    assert r["output"][1]["type"] == "function_call" and r["output"][1]["call_id"] == "c1"
    assert r["usage"]["output_tokens_details"] == {"reasoning_tokens": 4}
    assert r["usage"]["total_tokens"] == 14


def test_a_responses_line_for_gemini_becomes_a_generate_content_request() -> None:
    from batchd.backends.gemini_translate import to_gemini_request

    req = parse_request(
        {
            "endpoint": "responses",
            "model": "gemini-2.5-flash",
            "input": "hi",
            "instructions": "s",
            "max_output_tokens": 30,
        },
        1,
        "t",
    )
    assert isinstance(req, Request)
    got = to_gemini_request(as_chat(req, "Gemini"))
    assert got["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert got["systemInstruction"] == {"parts": [{"text": "s"}]}
    assert got["generationConfig"]["maxOutputTokens"] == 30
