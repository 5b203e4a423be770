"""The OpenAI endpoints besides chat, as the OpenAI batch emulator answers them.

Shapes follow OpenAI's API reference:
- ``/v1/embeddings``: an ``object: "list"`` of ``{"object": "embedding", "index",
  "embedding"}`` and ``usage {prompt_tokens, total_tokens}``. Vectors are deterministic
  (seeded by model and input), unit length, of the model's documented size
  (text-embedding-3-small 1536, -3-large 3072, ada-002 1536), or ``dimensions`` (the
  text-embedding-3 models only: shortened and renormalised, as OpenAI documents);
  ``encoding_format: "base64"`` gives little-endian float32 bytes in base64.
- ``/v1/responses``: a ``response`` object whose ``output`` holds, for reasoning models
  (gpt-5*, o1, o3, o4*), a ``reasoning`` item, then the assistant ``message`` with one
  ``output_text`` part; ``usage {input_tokens, input_tokens_details.cached_tokens,
  output_tokens, output_tokens_details.reasoning_tokens, total_tokens}``, where output
  tokens include the reasoning tokens (REASONING_TOKENS by ``reasoning.effort``, medium by
  default; none for ``"none"``). ``max_output_tokens`` caps both: over it the response is
  ``status: "incomplete"`` with ``incomplete_details.reason: "max_output_tokens"``.
- ``/v1/completions``: a ``text_completion`` object with ``choices[0].text``; ``max_tokens``
  defaults to 16, as OpenAI documents. ``prompt`` may be a list of several prompts (strings or
  token arrays): ``choices`` then run prompt by prompt, ``n`` per prompt, ``index`` counting
  through them all; usage sums every prompt.
- Embeddings ``input`` may be a list of several strings or token arrays (at most 2048):
  one ``data`` item per input, ``index`` its place.
The reply text is ``"echo: " + the last user text``, one token per word, as for chat; the
``[[error:400]]`` / ``[[error:500]]`` markers work on every endpoint. A model used on an
endpoint it does not serve answers 400 as OpenAI does.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
from collections.abc import Callable
from typing import Any

JSONDict = dict[str, Any]

EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
REASONING_PREFIXES = ("gpt-5", "o1", "o3", "o4")
REASONING_TOKENS = {"none": 0, "minimal": 2, "low": 4, "medium": 8, "high": 16, "xhigh": 32}
DEFAULT_COMPLETION_MAX_TOKENS = 16
MAX_INPUTS = 2048  # OpenAI: inputs of one embeddings request (and batchd's cap on prompts)


def _error(message: str, param: str | None = None, code: str | None = None) -> JSONDict:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, int):
                parts.append(f"t{part}")
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, list):
                parts.append(_text_of(part))
        return " ".join(parts)
    return ""


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _marker(text: str) -> tuple[int, JSONDict] | None:
    if "[[error:400]]" in text:
        return 400, _error("Invalid request (emulated).")
    if "[[error:500]]" in text:
        body = _error("Internal server error (emulated).")
        body["error"]["type"] = "server_error"
        return 500, body
    return None


def vector(model: str, text: str, dimensions: int) -> list[float]:
    """The emulator's embedding: deterministic, unit length; shortened = a renormalised prefix."""
    seed = hashlib.blake2b(f"{model}\x00{text}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(seed, "big"))
    full = [rng.gauss(0.0, 1.0) for _ in range(EMBEDDING_DIMENSIONS[model])]
    cut = full[:dimensions]
    norm = math.sqrt(sum(x * x for x in cut)) or 1.0
    return [x / norm for x in cut]


def embeddings(body: JSONDict, new_id: Callable[[str], str]) -> tuple[int, JSONDict]:
    model = body.get("model")
    if model not in EMBEDDING_DIMENSIONS:
        return 400, _error(f"The model '{model}' does not support embeddings.", "model")
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    if not raw or any(not x for x in inputs):
        return 400, _error("'input' is required and cannot be empty.", "input")
    if len(inputs) > MAX_INPUTS:
        return 400, _error(f"'input' holds more than {MAX_INPUTS} items.", "input")
    size = EMBEDDING_DIMENSIONS[model]
    dims = body.get("dimensions")
    if dims is not None:
        if model == "text-embedding-ada-002":
            return 400, _error("This model does not support specifying dimensions.", "dimensions")
        if not isinstance(dims, int) or not 1 <= dims <= size:
            return 400, _error(f"'dimensions' must be between 1 and {size}.", "dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        return 400, _error(f"Invalid value for 'encoding_format': '{fmt}'.", "encoding_format")
    texts = [_text_of(x) if not isinstance(x, str) else x for x in inputs]
    hit = _marker(" ".join(texts))
    if hit is not None:
        return hit
    data = []
    for i, text in enumerate(texts):
        vec = vector(model, text, dims or size)
        encoded: Any = vec
        if fmt == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    used = sum(_tokens(t) for t in texts)
    return 200, {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


def _last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            return _text_of(item.get("content"))
    return ""


def responses(body: JSONDict, new_id: Callable[[str], str]) -> tuple[int, JSONDict]:
    model = str(body.get("model") or "")
    if model in EMBEDDING_DIMENSIONS or model in COMPLETION_MODELS:
        return 400, _error(f"The model '{model}' is not supported by the Responses API.", "model")
    if "input" not in body:
        return 400, _error("Missing required parameter: 'input'.", "input")
    text = _last_user_text(body["input"])
    hit = _marker(text)
    if hit is not None:
        return hit
    reasoning_model = model.startswith(REASONING_PREFIXES)
    effort = (body.get("reasoning") or {}).get("effort") or "medium"
    thinking = REASONING_TOKENS.get(effort, 8) if reasoning_model else 0
    words = ("echo: " + text).split()
    limit = body.get("max_output_tokens")
    status, incomplete = "completed", None
    if isinstance(limit, int) and thinking + len(words) > limit:
        thinking = min(thinking, limit)
        words = words[: max(limit - thinking, 0)]
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    output: list[JSONDict] = []
    if reasoning_model:
        output.append({"type": "reasoning", "id": new_id("rs_"), "summary": []})
    part = {"type": "output_text", "text": " ".join(words), "annotations": []}
    output.append(
        {
            "type": "message",
            "id": new_id("msg_"),
            "status": status,
            "role": "assistant",
            "content": [part],
        }
    )
    items = body["input"] if isinstance(body["input"], list) else [{"content": body["input"]}]
    prompt = _tokens(str(body.get("instructions") or "")) + sum(
        _tokens(_text_of(i.get("content"))) for i in items if isinstance(i, dict)
    )
    out_tokens = thinking + len(words)
    return 200, {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "incomplete_details": incomplete,
        "error": None,
        "model": model,
        "output": output,
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out_tokens,
            "output_tokens_details": {"reasoning_tokens": thinking},
            "total_tokens": prompt + out_tokens,
        },
    }


def completions(body: JSONDict, new_id: Callable[[str], str]) -> tuple[int, JSONDict]:
    model = str(body.get("model") or "")
    if model not in COMPLETION_MODELS:
        return 400, _error(
            "This is a chat model and not supported in the v1/completions endpoint. Did you "
            "mean to use v1/chat/completions?",
            "model",
        )
    if "prompt" not in body:
        return 400, _error("Missing required parameter: 'prompt'.", "prompt")
    raw = body["prompt"]
    several = isinstance(raw, list) and raw and not isinstance(raw[0], int)
    prompts = raw if several else [raw]
    if len(prompts) > MAX_INPUTS:
        return 400, _error(f"'prompt' holds more than {MAX_INPUTS} items.", "prompt")
    texts = [_text_of(p) for p in prompts]
    hit = _marker(" ".join(texts))
    if hit is not None:
        return hit
    limit = body.get("max_tokens")
    limit = limit if isinstance(limit, int) else DEFAULT_COMPLETION_MAX_TOKENS
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    choices, out_tokens = [], 0
    for text in texts:  # OpenAI: prompt i's n choices at indices i*n .. i*n+n-1
        words = ("echo: " + text).split()
        finish = "stop"
        if len(words) > limit:
            words, finish = words[:limit], "length"
        for _ in range(n):
            choices.append(
                {
                    "text": " ".join(words),
                    "index": len(choices),
                    "logprobs": None,
                    "finish_reason": finish,
                }
            )
            out_tokens += len(words)
    prompt = sum(_tokens(t) for t in texts)
    return 200, {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": out_tokens,
            "total_tokens": prompt + out_tokens,
        },
    }


EXECUTORS: dict[str, Callable[[JSONDict, Callable[[str], str]], tuple[int, JSONDict]]] = {
    "/v1/embeddings": embeddings,
    "/v1/responses": responses,
    "/v1/completions": completions,
}


def usage_totals(usage: JSONDict) -> tuple[int, int]:
    """(input, output) tokens of any endpoint's usage, for the batch's own usage."""
    return (
        int(usage.get("prompt_tokens", usage.get("input_tokens", 0))),
        int(usage.get("completion_tokens", usage.get("output_tokens", 0))),
    )
