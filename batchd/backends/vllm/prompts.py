"""Chat-completions bodies -> vLLM prompts and sampling parameters, and results -> rows.

What a self-hosted model cannot honour is refused per request (a `failed` row that
names the parameter), never silently dropped: only parameters that change nothing
about the answer (`user`, `stream: false`, `n: 1`, ...) are ignored.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from batchd.backends.vllm.engine import GenResult
from batchd.outcome import FAILED, SUCCEEDED, Outcome

# body field -> SamplingParams field
_SAMPLING = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repetition_penalty": "repetition_penalty",
}
_IGNORED = {"model", "messages", "prompt", "user", "metadata", "store", "stream_options"}
_HARMLESS_VALUES: dict[str, Any] = {"n": 1, "stream": False, "logprobs": False}
DEFAULT_MAX_TOKENS = 256

_enc = msgspec.json.Encoder()


class Refused(Exception):
    """The request cannot run on this model; the message says why."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def sampling_of(
    body: dict[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """SamplingParams keywords for a body; Refused names the first parameter we cannot honour."""
    out: dict[str, Any] = {"max_tokens": default_max_tokens}
    for name, value in body.items():
        if name in _SAMPLING:
            if value is not None:
                _check_sampling(name, value)
                out[_SAMPLING[name]] = value
        elif name in _HARMLESS_VALUES:
            if value is not None and value != _HARMLESS_VALUES[name]:
                raise Refused("unsupported_parameter", f"{name}={value!r} is not supported on vLLM")
        elif name not in _IGNORED:
            raise Refused("unsupported_parameter", f"parameter {name!r} is not supported on vLLM")
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    return out


_INTS = {"max_tokens", "max_completion_tokens", "top_k", "seed"}


def _check_sampling(name: str, value: Any) -> None:
    """A sampling value of the kind vLLM takes (numbers in 64 bits; stop: strings)."""
    if name == "stop":
        ok = isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(s, str) for s in value)
        )
    elif name in _INTS:
        ok = type(value) is int and -(2**63) <= value < 2**63
    else:
        ok = type(value) in (int, float) and abs(value) < 1e300
    if not ok:
        raise Refused("invalid_request", f"{name} has a value vLLM cannot take: give a number")


def prompt_of(body: dict[str, Any], tokenizer: Any) -> str:
    """The text the engine sees: the chat template applied to messages, or a raw prompt."""
    if "messages" not in body:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise Refused("invalid_request", "a vLLM request needs `messages` or a string `prompt`")
        return prompt
    messages = []
    for i, m in enumerate(body["messages"]):
        if not isinstance(m, dict):
            raise Refused("invalid_request", f"messages[{i}] is not an object")
        extra = sorted(k for k in m if k not in ("role", "content") and m[k] is not None)
        if extra:  # tool calls, names...: the chat template would drop them unseen
            raise Refused(
                "unsupported_parameter",
                f"messages[{i}].{extra[0]} is not supported on vLLM (only role and content)",
            )
        messages.append({"role": m.get("role"), "content": _text_of(m.get("content"), i)})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        raise Refused("invalid_request", f"the model's chat template refused: {exc}") from exc
    return str(text)


def _text_of(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise Refused("invalid_request", f"messages[{i}].content must be a string or text parts")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text":
            raise Refused(
                "unsupported_parameter", f"message part of type {kind!r} is not supported on vLLM"
            )
        text = part.get("text", "")
        if not isinstance(text, str):
            raise Refused("invalid_request", f"messages[{i}]: a text part's text is not a string")
        texts.append(text)
    return "".join(texts)


def outcome_of(
    request_id: str, model: str, is_chat: bool, r: GenResult, gpu_hourly_usd: float
) -> Outcome:
    """A row's worth: OpenAI-shaped response_json, usage, GPU-seconds and their cost."""
    if r.error_type is not None:
        return Outcome(
            status=FAILED,
            model_used=model,
            error_type=r.error_type,
            error_message=r.error_message,
            retryable=r.error_type == "engine_error",
        )
    usage = {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.prompt_tokens + r.output_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cached_tokens},
    }
    if is_chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": r.text},
            "finish_reason": r.finish_reason,
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": r.text, "finish_reason": r.finish_reason}
        kind = "text_completion"
    response = {
        "id": f"vllm-{request_id}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
    return Outcome(
        status=SUCCEEDED,
        model_used=model,
        output_text=r.text,
        response_json=_enc.encode(response).decode(),
        finish_reason=r.finish_reason,
        input_tokens=r.prompt_tokens,
        cached_input_tokens=r.cached_tokens,
        output_tokens=r.output_tokens,
        gpu_seconds=r.gpu_seconds,
        cost_usd=r.gpu_seconds * gpu_hourly_usd / 3600.0,
    )
