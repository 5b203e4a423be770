"""An OpenAI answer body -> the Outcome's common answer shape, for each endpoint.

The endpoint is read from the answer's own `object`: `chat.completion`, `response`
(Responses), `list` (embeddings), `text_completion` (completions). What each gives:
- output_text: chat `choices[0].message.content`; Responses the `output_text` parts of its
  message items, joined; completions `choices[0].text`; embeddings none.
- finish_reason in OpenAI chat words: Responses `completed` -> stop (tool_calls when it
  called a function), `incomplete` for max_output_tokens -> length, for content_filter ->
  content_filter.
- tool_calls: JSON text of the calls in chat's shape (Responses function_call items too).
- embedding: the vector as floats, decoded from base64 when the line asked for base64.
- tokens: input (prompt), cached input, output; reasoning tokens (chat
  `completion_tokens_details`, Responses `output_tokens_details`) are part of the output
  tokens and billed as output.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import numpy as np

_enc = msgspec.json.Encoder()
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def answer_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Outcome fields (besides status, model and response_json) of a 200 answer body."""
    kind = body.get("object")
    if kind == "response":
        return _response(body)
    if kind == "list":
        return _embeddings(body)
    if kind == "text_completion":
        return _completion(body)
    return _chat(body)


def _usage(usage: dict[str, Any], prompt: str, completion: str) -> dict[str, int]:
    details = usage.get(f"{prompt}_details") or {}
    out_details = usage.get(f"{completion}_details") or {}
    return {
        "input_tokens": int(usage.get(prompt) or 0),
        "cached_input_tokens": int(details.get("cached_tokens") or 0),
        "output_tokens": int(usage.get(completion) or 0),
        "reasoning_tokens": int(out_details.get("reasoning_tokens") or 0),
    }


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls")
    return {
        "output_text": message.get("content"),
        "finish_reason": choice.get("finish_reason"),
        "tool_calls": _enc.encode(calls).decode() if calls else None,
        **_usage(body.get("usage") or {}, "prompt_tokens", "completion_tokens"),
    }


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    choice = (body.get("choices") or [{}])[0]
    return {
        "output_text": choice.get("text"),
        "finish_reason": choice.get("finish_reason"),
        **_usage(body.get("usage") or {}, "prompt_tokens", "completion_tokens"),
    }


def _response(body: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in body.get("output") or []:
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                }
            )
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        finish = _INCOMPLETE.get(str(reason), "length")
    else:
        finish = "tool_calls" if calls else "stop"
    return {
        "output_text": "".join(texts) if texts or not calls else None,
        "finish_reason": finish,
        "tool_calls": _enc.encode(calls).decode() if calls else None,
        **_usage(body.get("usage") or {}, "input_tokens", "output_tokens"),
    }


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    data = sorted(body.get("data") or [], key=lambda d: d.get("index", 0))
    vector = decode_embedding(data[0].get("embedding")) if data else None
    usage = body.get("usage") or {}
    return {
        "embedding": vector,
        "input_tokens": int(usage.get("prompt_tokens") or 0),
    }


def decode_embedding(value: Any) -> list[float] | None:
    """A vector as floats: base64 (little-endian float32, as OpenAI sends it) or a list."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(float).tolist()
    if isinstance(value, list):
        return [float(x) for x in value]
    return None
