"""An engine result -> a row's Outcome, with `response_json` in OpenAI's shapes.

Chat: a `chat.completion` (every choice of `n`, tool calls and logprobs in OpenAI's form);
completions: a `text_completion` (a line of several prompts: every prompt's choices, in
order); embeddings: an embedding `list` (one item per input). `output_text`,
`finish_reason` and `tool_calls` are choice 0's; token counts cover every choice; GPU-seconds
and their cost are the request's share of the engine's steps.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import msgspec

from batchd.backends.vllm.engine import Choice, GenResult
from batchd.backends.vllm.prompts import Plan
from batchd.backends.vllm.structured import AUTO, NAMED, REQUIRED, forced_calls, parsed_calls
from batchd.backends.vllm.structured import schema_valid as check_schema
from batchd.outcome import FAILED, SUCCEEDED, Outcome
from batchd.requests import CHAT, EMBEDDINGS

_enc = msgspec.json.Encoder()


def failed_outcome(model: str, r: GenResult) -> Outcome:
    return Outcome(
        status=FAILED,
        model_used=model,
        error_type=r.error_type,
        error_message=r.error_message,
        retryable=r.error_type == "engine_error",
    )


def outcome_of(
    request_id: str,
    model: str,
    plan: Plan | None,
    r: GenResult,
    gpu_hourly_usd: float,
    *,
    body: dict[str, Any] | None = None,
    tokenizer: Any = None,
    tool_parser: str = "",
) -> Outcome:
    """A row's worth for one request; `body`/`tokenizer`/`tool_parser` serve `auto` tools."""
    if r.error_type is not None or plan is None:
        return failed_outcome(model, r)
    base: dict[str, Any] = {
        "id": f"vllm-{request_id}",
        "created": int(time.time()),
        "model": model,
    }
    cost: dict[str, Any] = {
        "gpu_seconds": r.gpu_seconds,
        "cost_usd": r.gpu_seconds * gpu_hourly_usd / 3600.0,
    }
    tokens: dict[str, Any] = {
        "input_tokens": r.prompt_tokens,
        "cached_input_tokens": r.cached_tokens,
    }
    if plan.endpoint == EMBEDDINGS:
        vector = r.embedding or []
        data = []
        for i, v in enumerate(r.vectors or [vector]):
            item: Any = v
            if plan.encoding_format == "base64":
                item = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": item})
        response = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": r.prompt_tokens, "total_tokens": r.prompt_tokens},
        }
        return Outcome(
            status=SUCCEEDED,
            model_used=model,
            response_json=_enc.encode(response).decode(),
            embedding=None if r.vectors else vector,
            embeddings=r.vectors,
            **tokens,
            **cost,
        )
    usage = {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.prompt_tokens + r.output_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
    }
    choices = r.choices or [Choice(text=r.text, finish_reason=r.finish_reason)]
    calls0: list[dict[str, Any]] | None = None
    if plan.endpoint == CHAT:
        shaped: list[dict[str, Any]] = []
        for i, ch in enumerate(choices):
            msg, finish, calls = _message(plan, ch, body or {}, tokenizer, tool_parser)
            shaped.append(
                {
                    "index": i,
                    "message": msg,
                    "logprobs": None if ch.logprobs is None else {"content": ch.logprobs},
                    "finish_reason": finish,
                }
            )
            if i == 0:
                calls0 = calls
        response = {**base, "object": "chat.completion", "choices": shaped, "usage": usage}
        text0: str | None = shaped[0]["message"]["content"]
        finish0: str | None = shaped[0]["finish_reason"]
    else:
        shaped = [
            {
                "index": i,
                "text": ch.text,
                "logprobs": None if ch.logprobs is None else _legacy(ch.logprobs),
                "finish_reason": ch.finish_reason,
            }
            for i, ch in enumerate(choices)
        ]
        response = {**base, "object": "text_completion", "choices": shaped, "usage": usage}
        text0, finish0 = choices[0].text, choices[0].finish_reason
    return Outcome(
        status=SUCCEEDED,
        model_used=model,
        output_text=text0,
        response_json=_enc.encode(response).decode(),
        finish_reason=finish0,
        tool_calls=None if calls0 is None else _enc.encode(calls0).decode(),
        schema_valid=check_schema(plan.constraint.schema, text0),
        output_tokens=r.output_tokens,
        **tokens,
        **cost,
    )


def _message(
    plan: Plan, ch: Choice, body: dict[str, Any], tokenizer: Any, tool_parser: str
) -> tuple[dict[str, Any], str | None, list[dict[str, Any]] | None]:
    """(message, finish_reason, tool calls) of one chat choice."""
    c = plan.constraint
    calls: list[dict[str, Any]] | None = None
    content: str | None = ch.text
    if c.tool_mode in (NAMED, REQUIRED):
        calls = forced_calls(c, ch.text)  # None: cut short (finish_reason says why)
        if calls is not None:
            content = None
    elif c.tool_mode == AUTO:
        calls, content = parsed_calls(tool_parser, tokenizer, body, ch.text)
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls is not None:
        msg["tool_calls"] = calls
        return msg, "tool_calls", calls
    return msg, ch.finish_reason, None


def _legacy(positions: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat-shaped token logprobs -> the completions endpoint's legacy logprobs object."""
    offsets, at = [], 0
    for p in positions:
        offsets.append(at)
        at += len(p["token"])
    return {
        "tokens": [p["token"] for p in positions],
        "token_logprobs": [p["logprob"] for p in positions],
        "top_logprobs": [{t["token"]: t["logprob"] for t in p["top_logprobs"]} for p in positions],
        "text_offset": offsets,
    }
