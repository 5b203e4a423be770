"""OpenAI batch output lines of every endpoint -> the common answer shape."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from batchd.backends.openai_batch import parse_output_line
from batchd.outcome import FAILED, SUCCEEDED


def _line(body: dict[str, Any], status: int = 200) -> bytes:
    return json.dumps(
        {
            "id": "batch_req_1",
            "custom_id": "k1",
            "response": {"status_code": status, "request_id": "req_abc", "body": body},
            "error": None,
        }
    ).encode()


def test_embeddings_base64_is_decoded_to_floats() -> None:
    vec = [0.5, -0.25, 0.125]
    b64 = base64.b64encode(struct.pack("<3f", *vec)).decode()
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": b64}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    cid, o = parse_output_line(_line(body), "text-embedding-3-small")
    assert (cid, o.status, o.embedding) == ("k1", SUCCEEDED, vec)
    assert (o.input_tokens, o.output_tokens, o.output_text) == (7, 0, None)
    assert o.request_id == "req_abc"
    assert json.loads(o.response_json or "")["data"][0]["embedding"] == b64  # vendor's own


def test_responses_text_parts_reasoning_and_calls() -> None:
    body = {
        "object": "response",
        "status": "completed",
        "model": "gpt-5.4-mini",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Hello, "},
                    {"type": "output_text", "text": "world"},
                ],
            },
            {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": "{}"},
        ],
        "usage": {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 3},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 12},
        },
    }
    _, o = parse_output_line(_line(body), "gpt-5.4-mini")
    assert o.output_text == "Hello, world" and o.finish_reason == "tool_calls"
    assert (o.input_tokens, o.cached_input_tokens, o.output_tokens) == (11, 3, 20)
    assert o.reasoning_tokens == 12
    assert json.loads(o.tool_calls or "") == [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]


@pytest.mark.parametrize(
    ("reason", "finish"), [("max_output_tokens", "length"), ("content_filter", "content_filter")]
)
def test_incomplete_responses_finish_in_chat_words(reason: str, finish: str) -> None:
    body = {
        "object": "response",
        "status": "incomplete",
        "incomplete_details": {"reason": reason},
        "output": [],
        "usage": {"input_tokens": 1, "output_tokens": 5},
    }
    _, o = parse_output_line(_line(body), "gpt-5.4-mini")
    assert (o.status, o.finish_reason, o.output_text) == (SUCCEEDED, finish, "")


def test_a_failed_response_is_a_failed_row_with_its_error() -> None:
    body = {
        "object": "response",
        "status": "failed",
        "error": {"code": "server_error", "message": "boom"},
        "output": [],
    }
    _, o = parse_output_line(_line(body), "gpt-5.4-mini")
    assert o.status == FAILED and o.error_type == "server_error" and "boom" in o.error_message
    assert o.retryable and o.request_id == "req_abc"


def test_completions_and_chat_reasoning_tokens() -> None:
    completion = {
        "object": "text_completion",
        "choices": [{"text": " there", "index": 0, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 16},
    }
    _, o = parse_output_line(_line(completion), "davinci-002")
    assert (o.output_text, o.finish_reason, o.output_tokens) == (" there", "length", 16)
    chat = {
        "object": "chat.completion",
        "choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 4,
            "completion_tokens": 30,
            "completion_tokens_details": {"reasoning_tokens": 27},
        },
    }
    _, o = parse_output_line(_line(chat), "gpt-5.4-nano")
    assert (o.output_text, o.output_tokens, o.reasoning_tokens) == ("ok", 30, 27)
