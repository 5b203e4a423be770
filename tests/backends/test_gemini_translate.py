"""OpenAI-style chat, native and Anthropic-format lines -> Gemini GenerateContentRequest."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.backends.base import UnsupportedRequest
from batchd.backends.gemini_translate import to_gemini_request
from batchd.requests import Request, parse_request

MODEL = "gemini-2.5-flash"


def _req(obj: dict[str, Any]) -> Request:
    parsed = parse_request(obj, 1, "default")
    assert isinstance(parsed, Request), parsed
    return parsed


def _chat(**body: Any) -> Request:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return _req(
        {
            "custom_id": "c",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, **body},
        }
    )


def test_messages_system_and_parameters() -> None:
    out = to_gemini_request(
        _chat(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": [{"type": "text", "text": "q2"}]},
            ],
            max_tokens=12,
            temperature=0.3,
            top_p=0.9,
            stop="END",
            seed=7,
            presence_penalty=0.1,
            frequency_penalty=0.2,
            n=1,
            stream=False,
        )
    )
    assert out == {
        "contents": [
            {"role": "user", "parts": [{"text": "q1"}]},
            {"role": "model", "parts": [{"text": "a1"}]},
            {"role": "user", "parts": [{"text": "q2"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 12,
            "temperature": 0.3,
            "topP": 0.9,
            "stopSequences": ["END"],
            "seed": 7,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
        },
    }


def test_max_completion_tokens_and_stop_list() -> None:
    out = to_gemini_request(_chat(max_completion_tokens=5, stop=["a", "b"]))
    assert out["generationConfig"] == {"maxOutputTokens": 5, "stopSequences": ["a", "b"]}


def test_response_format_json_schema_and_json_object() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    out = to_gemini_request(
        _chat(
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
        )
    )
    assert out["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    out = to_gemini_request(_chat(response_format={"type": "json_object"}))
    assert out["generationConfig"] == {"responseMimeType": "application/json"}


def test_tools_tool_choice_and_tool_turns() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    out = to_gemini_request(
        _chat(
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 3}'},
            ],
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "description": "Look it up",
                        "parameters": params,
                    },
                }
            ],
            tool_choice={"type": "function", "function": {"name": "weather"}},
        )
    )
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {"name": "weather", "description": "Look it up", "parametersJsonSchema": params}
            ]
        }
    ]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}
    }
    assert out["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}],
    }
    assert out["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "weather", "response": {"temp_c": 3}}}],
    }
    assert to_gemini_request(_chat(tool_choice="required"))["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY"}
    }


def test_data_url_image_becomes_inline_data() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    out = to_gemini_request(_chat(messages=[{"role": "user", "content": content}]))
    assert out["contents"][0]["parts"] == [
        {"text": "what is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]


def test_native_and_anthropic_lines() -> None:
    native = _req({"id": "n", "model": MODEL, "prompt": "p", "system": "s", "top_k": 4})
    assert to_gemini_request(native) == {
        "contents": [{"role": "user", "parts": [{"text": "p"}]}],
        "systemInstruction": {"parts": [{"text": "s"}]},
        "generationConfig": {"topK": 4},
    }
    claude = _req(
        {
            "custom_id": "a",
            "params": {
                "model": MODEL,
                "max_tokens": 9,
                "stop_sequences": ["x"],
                "messages": [{"role": "user", "content": "hello"}],
            },
        }
    )
    assert to_gemini_request(claude)["generationConfig"] == {
        "maxOutputTokens": 9,
        "stopSequences": ["x"],
    }


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"user": "u-1"}, "user"),
        ({"top_k": 3}, "top_k"),  # a Claude/Gemini word, not OpenAI's: only in native lines
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                    }
                ]
            },
            "image_url",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]},
            "system",
        ),
        ({"messages": [{"role": "system", "content": "only"}]}, "user message"),
        ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "tool"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input_audio"),
    ],
)
def test_what_cannot_be_translated_is_named(body: dict[str, Any], named: str) -> None:
    with pytest.raises(UnsupportedRequest, match=named):
        to_gemini_request(_chat(**body))


_KNOWN = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "response_format",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "n",
}
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.text(min_size=1, max_size=12), _json, max_size=3))
def test_hostile_parameters_translate_or_are_refused(extra: dict[str, Any]) -> None:
    """Any extra parameter is either expressed or named in an UnsupportedRequest; never lost."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
    parsed = parse_request(
        {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": body}, 1, "d"
    )
    if not isinstance(parsed, Request):
        return  # refused at parsing, with a reason (tested in tests/intake)
    try:
        out = to_gemini_request(parsed)
    except UnsupportedRequest as exc:
        assert any(name in str(exc) for name in extra) or "Gemini" in str(exc)
        return
    except Exception as exc:  # pragma: no cover - the failure this test exists to find
        pytest.fail(f"translation crashed on {extra!r}: {exc!r}")
    assert set(extra) <= _KNOWN, out  # an unknown parameter never translates silently
