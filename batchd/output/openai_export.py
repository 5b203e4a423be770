"""`--export openai-jsonl`: every result row as the line OpenAI's batch output file would hold.

A consumer of OpenAI batch output reads any batchd run, whatever answered each line:
- an answer already in OpenAI's shape for its endpoint (OpenAI, OpenAI-compatible providers,
  vLLM's chat and completion objects) is written as it is;
- any other answer (Claude, Gemini, ...) is built from the common answer columns
  (`output_text`, `finish_reason`, `tool_calls`, `embedding`, token columns) as the object
  OpenAI returns for the line's endpoint: `chat.completion`, `response`, `text_completion`,
  or an embedding `list` (float vectors, or base64 little-endian float32 when the line asked
  for `encoding_format: "base64"`); a line of several inputs or prompts gets one `data` item
  per input (with its `index`) or one choice per prompt, in order;
- a failure as OpenAI writes one: `response` with the HTTP `status_code`, the vendor's
  `request_id` and `body.error` ({message, type, param, code}); a line that expired or was
  cancelled before it ran as OpenAI's `error` ({code: batch_expired | batch_cancelled}).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import msgspec
import numpy as np

from batchd.outcome import CANCELED, EXPIRED, INVALID, SUCCEEDED

_dec = msgspec.json.Decoder()
# The object OpenAI answers each endpoint with (its `object` field).
OBJECT_OF = {
    "chat": "chat.completion",
    "responses": "response",
    "completions": "text_completion",
    "embeddings": "list",
}
CHAT_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
COMPLETION_FINISH = frozenset({"stop", "length", "content_filter"})
_HTTP = re.compile(r"^HTTP (\d{3}):")
# error_type -> the HTTP status OpenAI answers such a request with.
_STATUS_OF = {
    "invalid_request_error": 400,
    "invalid_argument": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "permission_denied": 403,
    "not_found_error": 404,
    "not_found": 404,
    "rate_limit_error": 429,
    "resource_exhausted": 429,
    "content_filter": 400,
    "overloaded_error": 503,
    "unavailable": 503,
}
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def export_line(row: dict[str, Any], endpoint: str | None, encoding: str | None) -> dict[str, Any]:
    """The OpenAI batch output line for one result row."""
    line: dict[str, Any] = {
        "id": f"batchd-{row['run_id']}-{row['line_no']}",
        "custom_id": row["custom_id"],
    }
    status = row["status"]
    if status == SUCCEEDED:
        line["response"] = {
            "status_code": 200,
            "request_id": row.get("request_id"),
            "body": answer_body(row, endpoint or "chat", encoding),
        }
        line["error"] = None
    elif status in (EXPIRED, CANCELED):  # never ran: OpenAI's batch-level line error
        code = "batch_expired" if status == EXPIRED else "batch_cancelled"
        message = row["error_message"] or (EXPIRED_MESSAGE if status == EXPIRED else status)
        line["response"] = None
        line["error"] = {"code": code, "message": message}
    else:
        line["response"] = _failure(row)
        line["error"] = None
    return line


def _failure(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["error_type"] or row["status"]
    message = row["error_message"] or kind
    found = _HTTP.match(message)
    if found:
        status_code = int(found.group(1))
        message = message[found.end() :].strip()
    elif row["status"] == INVALID:
        status_code = 400  # batchd refused the line as OpenAI refuses a bad request
    else:
        status_code = _STATUS_OF.get(kind, 500)
    vendor = _decode(row.get("response_json"))
    error = vendor.get("error") if isinstance(vendor, dict) else None
    if not (row.get("backend") == "openai" and isinstance(error, dict)):
        error_kind = "invalid_request_error" if status_code < 500 else "server_error"
        error = {"message": message, "type": error_kind, "param": None, "code": kind}
    return {
        "status_code": status_code,
        "request_id": row.get("request_id"),
        "body": {"error": error},
    }


def _decode(text: str | None) -> Any:
    if not text:
        return None
    try:
        return _dec.decode(text)
    except msgspec.DecodeError:
        return None


def answer_body(row: dict[str, Any], endpoint: str, encoding: str | None) -> dict[str, Any]:
    """The answer as the OpenAI object of `endpoint`: the vendor's own when it is one."""
    vendor = _decode(row.get("response_json"))
    wanted = OBJECT_OF.get(endpoint, "chat.completion")
    if (
        isinstance(vendor, dict)
        and vendor.get("object") == wanted
        and (endpoint != "embeddings" or _encoded_as(vendor, encoding))
    ):
        return vendor
    build = {
        "responses": _response,
        "completions": _completion,
        "embeddings": lambda r: _embeddings(r, encoding),
    }.get(endpoint, _chat)
    return build(row)


def _encoded_as(vendor: dict[str, Any], encoding: str | None) -> bool:
    """Whether an embedding list's vectors are in the encoding the line asked for."""
    data = vendor.get("data") or [{}]
    vector = data[0].get("embedding") if isinstance(data[0], dict) else None
    return isinstance(vector, str) == (encoding == "base64")


def _created_s(row: dict[str, Any]) -> int:
    at = row.get("completed_at")
    if at is None:
        return 0
    return int(at.timestamp()) if hasattr(at, "timestamp") else int(at) // 1_000_000


def _id(prefix: str, row: dict[str, Any]) -> str:
    return prefix + (row.get("request_id") or row.get("request_key") or str(row["line_no"]))


def _tool_calls(row: dict[str, Any]) -> list[dict[str, Any]]:
    calls = _decode(row.get("tool_calls"))
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def _tokens(row: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        int(row.get("input_tokens") or 0),
        int(row.get("cached_input_tokens") or 0),
        int(row.get("output_tokens") or 0),
        int(row.get("reasoning_tokens") or 0),
    )


def _chat(row: dict[str, Any]) -> dict[str, Any]:
    calls = _tool_calls(row)
    finish = row.get("finish_reason")
    finish = finish if finish in CHAT_FINISH else ("tool_calls" if calls else "stop")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": row.get("output_text") if row.get("output_text") or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    inp, cached, out, reasoning = _tokens(row)
    return {
        "id": _id("chatcmpl-", row),
        "object": "chat.completion",
        "created": _created_s(row),
        "model": row.get("model_used") or row.get("model_requested") or "",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": inp,
            "completion_tokens": out,
            "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def _completion(row: dict[str, Any]) -> dict[str, Any]:
    finish = row.get("finish_reason")
    inp, _, out, _ = _tokens(row)
    texts = row.get("output_texts") or [row.get("output_text") or ""]
    return {
        "id": _id("cmpl-", row),
        "object": "text_completion",
        "created": _created_s(row),
        "model": row.get("model_used") or row.get("model_requested") or "",
        "choices": [
            {
                "index": i,
                "text": text or "",
                "finish_reason": finish if finish in COMPLETION_FINISH else "stop",
                "logprobs": None,
            }
            for i, text in enumerate(texts)
        ],
        "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out},
    }


def _response(row: dict[str, Any]) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    text = row.get("output_text")
    if text:
        output.append(
            {
                "type": "message",
                "id": _id("msg_", row),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    for call in _tool_calls(row):
        fn = call.get("function") or {}
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{call.get('id')}",
                "call_id": str(call.get("id")),
                "name": str(fn.get("name")),
                "arguments": str(fn.get("arguments") or "{}"),
                "status": "completed",
            }
        )
    cut = row.get("finish_reason") in ("length", "content_filter")
    reason = "max_output_tokens" if row.get("finish_reason") == "length" else "content_filter"
    inp, cached, out, reasoning = _tokens(row)
    return {
        "id": _id("resp_", row),
        "object": "response",
        "created_at": _created_s(row),
        "status": "incomplete" if cut else "completed",
        "model": row.get("model_used") or row.get("model_requested") or "",
        "output": output,
        "output_text": text or "",
        "error": None,
        "incomplete_details": {"reason": reason} if cut else None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": None,
        "top_p": None,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": inp,
            "input_tokens_details": {
                "cached_tokens": cached,
                "cache_write_tokens": int(row.get("cache_write_tokens") or 0),
            },
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out,
        },
    }


def _embeddings(row: dict[str, Any], encoding: str | None) -> dict[str, Any]:
    vectors = row.get("embeddings") or [row.get("embedding") or []]
    data = []
    for i, vector in enumerate(vectors):
        floats = [float(x) for x in vector or []]
        value: Any = floats
        if encoding == "base64":  # OpenAI's base64: the float32 vector's little-endian bytes
            value = base64.b64encode(np.asarray(floats, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    inp = int(row.get("input_tokens") or 0)
    return {
        "object": "list",
        "data": data,
        "model": row.get("model_used") or row.get("model_requested") or "",
        "usage": {"prompt_tokens": inp, "total_tokens": inp},
    }
