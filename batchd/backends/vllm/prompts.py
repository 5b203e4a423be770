"""Request bodies -> what the engine runs: a prompt, and sampling or pooling parameters.

Per endpoint: `chat` (messages through the model's chat template, tools rendered by it),
`completions` (`prompt` as it is, no template), `embeddings` (`input`, on an embed model).
`responses` lines reach here as chat bodies (translated at the encode boundary, see
`backend.VllmBackend.encode_line`).

What a self-hosted model cannot honour is refused per request (the line `invalid`, or a
`failed` row, naming the parameter), never silently dropped: only parameters that change
nothing about the answer (`user`, `stream: false`, ...) are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from batchd.backends.vllm.images import (
    IMAGE_KINDS,
    check_image_parts,
    multimodal_prompt,
    template_parts,
)
from batchd.backends.vllm.refusal import Refused
from batchd.backends.vllm.structured import AUTO, Constraint, constraint_of
from batchd.config.vllm_settings import EMBED
from batchd.requests import CHAT, COMPLETIONS, EMBEDDINGS

__all__ = ["DEFAULT_MAX_TOKENS", "Plan", "Refused", "plan_of", "prompts_of"]

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
_CONSTRAINTS = {"response_format", "tools", "tool_choice", "parallel_tool_calls"}
_HARMLESS_VALUES: dict[str, Any] = {"stream": False, "echo": False, "suffix": None, "best_of": 1}
_EMBED_KEYS = {"model", "input", "user", "encoding_format", "dimensions"}
MAX_N = 128
MAX_INPUTS = 2048  # inputs (or prompts) one line may hold, as OpenAI takes them
DEFAULT_MAX_TOKENS = 256
IMAGE_TARGETS = "a model that takes images, e.g. gpt-5.4-mini (OpenAI) or claude-sonnet-4-6"


@dataclass
class Plan:
    """One request as the engine will run it (before its prompt is rendered)."""

    endpoint: str
    sampling: dict[str, Any] = field(default_factory=dict)
    pooling: dict[str, Any] | None = None  # embeddings: PoolingParams keywords
    constraint: Constraint = field(default_factory=Constraint)
    top_logprobs: int = -1  # -1: no logprobs asked
    encoding_format: str = "float"  # embeddings: float | base64 (response_json only)


def plan_of(
    endpoint: str,
    body: dict[str, Any],
    kind: str,
    tool_parser: str,
    model: str = "",
    images: bool = False,
) -> Plan:
    """Check a body against the model's kind; Refused names the first thing it cannot do.

    `images`: the model takes images (its settings say `images = true`).

    Needs no tokenizer: run at encode time (the line is then `invalid`, and an alias places it
    elsewhere) and again on the worker.
    """
    name = f"vLLM model {model!r}" if model else "this vLLM model"
    if endpoint == EMBEDDINGS:
        if kind != EMBED:
            raise Refused(
                "unsupported_parameter",
                f"{name} generates text and makes no embeddings: send embeddings lines to an "
                "embedding model ([backends.vllm.models.<name>] kind = embed, or an OpenAI one "
                "such as text-embedding-3-small)",
            )
        return _embed_plan(body)
    if kind == EMBED:
        raise Refused(
            "unsupported_parameter",
            f"{name} is an embedding model: it answers only embeddings lines "
            f"(endpoint embeddings), not {endpoint}",
        )
    if endpoint not in (CHAT, COMPLETIONS):
        raise Refused("unsupported_parameter", f"endpoint {endpoint!r} is not supported on vLLM")
    if endpoint == CHAT:
        _check_messages(body.get("messages"), images)
    plan = Plan(endpoint=endpoint, sampling=_sampling(body, endpoint))
    plan.top_logprobs = _logprobs(body, endpoint, plan.sampling)
    if endpoint == CHAT:
        plan.constraint = constraint_of(body, tool_parser)
    elif body.keys() & _CONSTRAINTS:
        extra = sorted(body.keys() & _CONSTRAINTS)[0]
        raise Refused(
            "unsupported_parameter", f"{extra} is a chat parameter, not a completions one"
        )
    if plan.constraint.structured is not None:
        plan.sampling["structured_outputs"] = plan.constraint.structured
    return plan


def _sampling(body: dict[str, Any], endpoint: str) -> dict[str, Any]:
    out: dict[str, Any] = {"max_tokens": DEFAULT_MAX_TOKENS}
    for name, value in body.items():
        if name in _SAMPLING:
            if value is not None:
                _check_sampling(name, value)
                out[_SAMPLING[name]] = value
        elif name == "n":
            if value is not None:
                if type(value) is not int or not 1 <= value <= MAX_N:
                    raise Refused("invalid_request", f"n must be an integer in 1..{MAX_N}")
                out["n"] = value
        elif name in _HARMLESS_VALUES:
            if value is not None and value != _HARMLESS_VALUES[name]:
                raise Refused("unsupported_parameter", f"{name}={value!r} is not supported on vLLM")
        elif name in ("logprobs", "top_logprobs") or name in _CONSTRAINTS:
            continue
        elif name not in _IGNORED:
            raise Refused("unsupported_parameter", f"parameter {name!r} is not supported on vLLM")
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    return out


def _logprobs(body: dict[str, Any], endpoint: str, sampling: dict[str, Any]) -> int:
    """Chat: logprobs true + top_logprobs 0..20; completions: logprobs 0..5 (legacy)."""
    lp, top = body.get("logprobs"), body.get("top_logprobs")
    if endpoint == COMPLETIONS:
        if lp is None:
            return -1
        if type(lp) is not int or not 0 <= lp <= 5:
            raise Refused("invalid_request", "completions logprobs must be an integer in 0..5")
        sampling["logprobs"] = lp
        return lp
    if lp not in (None, False, True):
        raise Refused("invalid_request", "logprobs must be true or false")
    if top is not None and (type(top) is not int or not 0 <= top <= 20):
        raise Refused("invalid_request", "top_logprobs must be an integer in 0..20")
    if top is not None and lp is not True:
        raise Refused("invalid_request", "top_logprobs needs logprobs: true")
    if lp is not True:
        return -1
    sampling["logprobs"] = top or 0
    return top or 0


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


def _embed_plan(body: dict[str, Any]) -> Plan:
    extra = sorted(k for k in body if k not in _EMBED_KEYS)
    if extra:
        raise Refused(
            "unsupported_parameter", f"parameter {extra[0]!r} is not an embeddings parameter"
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise Refused("invalid_request", "encoding_format must be float or base64")
    pooling: dict[str, Any] = {"task": "embed"}
    dims = body.get("dimensions")
    if dims is not None:
        if type(dims) is not int or dims < 1:
            raise Refused("invalid_request", "dimensions must be a positive integer")
        pooling["dimensions"] = dims
    _inputs_of(body)
    return Plan(endpoint=EMBEDDINGS, pooling=pooling, encoding_format=fmt)


def _inputs_of(body: dict[str, Any]) -> list[str | dict[str, Any]]:
    """An embeddings `input` (or a completions `prompt`): one text or list of token ids, or
    several of them (each run on its own, the answers joined back in order: `vllm.gather`)."""
    key = "input" if "input" in body else "prompt"
    value = body.get(key)
    several = value if isinstance(value, list) and value and not _token_ids(value) else [value]
    if len(several) > MAX_INPUTS:
        raise Refused("invalid_request", f"{key} holds more than {MAX_INPUTS} inputs")
    out: list[str | dict[str, Any]] = []
    for item in several:
        if isinstance(item, str):
            if not item and key == "input":
                raise Refused("invalid_request", f"{key} holds an empty string")
            out.append(item)
        elif isinstance(item, list) and item and _token_ids(item):
            out.append({"prompt_token_ids": item})
        else:
            raise Refused("invalid_request", f"{key} must be strings or lists of token ids")
    return out


def _token_ids(value: list[Any]) -> bool:
    return all(type(t) is int and t >= 0 for t in value)


def _check_messages(messages: Any, images: bool) -> None:
    if not isinstance(messages, list) or not messages:
        raise Refused("invalid_request", "a chat request needs a non-empty `messages` list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise Refused("invalid_request", f"messages[{i}] is not an object")
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind in IMAGE_KINDS and images:
                    continue
                if kind in IMAGE_KINDS:
                    raise Refused(
                        "unsupported_parameter",
                        f"messages[{i}] holds an image, and this vLLM model takes text only "
                        "(a model that takes images says images = true in its settings): "
                        f"send image lines to {IMAGE_TARGETS}",
                    )
                if kind != "text":
                    raise Refused(
                        "unsupported_parameter",
                        f"message part of type {kind!r} is not supported on vLLM",
                    )
                if not isinstance(part.get("text", ""), str):
                    raise Refused(
                        "invalid_request", f"messages[{i}]: a text part's text is not a string"
                    )
        elif content is not None and not isinstance(content, str):
            raise Refused(
                "invalid_request", f"messages[{i}].content must be a string or text parts"
            )
    if images:
        check_image_parts(messages)


_TURN_KEYS = {"tool_calls", "tool_call_id", "name"}


def prompts_of(plan: Plan, body: dict[str, Any], tokenizer: Any) -> list[str | dict[str, Any]]:
    """What the engine sees, one item per request it runs: the chat template applied to
    messages (tools included), each completions prompt as it is, or each embeddings input."""
    if plan.endpoint != CHAT:
        return _inputs_of(body)
    return [_chat_prompt(plan, body, tokenizer)]


def _chat_prompt(plan: Plan, body: dict[str, Any], tokenizer: Any) -> str | dict[str, Any]:
    messages = []
    history_tools = False
    images: list[Any] = []  # decoded, in the order the template places them
    for i, m in enumerate(body["messages"]):
        known = ("role", "content", *_TURN_KEYS)
        extra = sorted(k for k in m if k not in known and m[k] is not None)
        if extra:
            raise Refused(
                "unsupported_parameter", f"messages[{i}].{extra[0]} is not supported on vLLM"
            )
        content = m.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in IMAGE_KINDS for p in content
        ):
            turn: dict[str, Any] = {"role": m.get("role"), "content": []}
            turn["content"] = template_parts(content, i, images)
        else:
            turn = {"role": m.get("role"), "content": _text_of(content)}
        for k in _TURN_KEYS & m.keys():
            if m[k] is not None:
                turn[k] = _template_calls(m[k]) if k == "tool_calls" else m[k]
                history_tools = True
        messages.append(turn)
    c = plan.constraint
    tools = [{"type": "function", "function": t} for t in c.tools] or None
    text = _render(tokenizer, messages, tools)
    if history_tools:  # tool turns the template would drop unseen: refuse, do not guess
        bare = [{"role": t["role"], "content": t["content"]} for t in messages]
        if _render(tokenizer, bare, tools) == text:
            raise Refused(
                "unsupported_parameter",
                "the model's chat template does not render tool calls or tool results in "
                "the history: this model cannot take them",
            )
    if c.tool_mode == AUTO and tools and _render(tokenizer, messages, None) == text:
        raise Refused(
            "unsupported_parameter",
            "the model's chat template does not render tools, so it cannot choose among them: "
            'send tool_choice "required" or a named function',
        )
    if images:
        bare = [{**t, "content": _text_of(t["content"])} for t in messages]
        if _render(tokenizer, bare, tools) == text:
            raise Refused(
                "unsupported_parameter",
                "the model's chat template does not render image parts: this model cannot "
                "take images (set images = false, or give it a template that places them)",
            )
        return multimodal_prompt(text, images)
    return text


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any) -> str:
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if tools:
        kwargs["tools"] = tools
    try:
        return str(tokenizer.apply_chat_template(messages, **kwargs))
    except Exception as exc:
        raise Refused("invalid_request", f"the model's chat template refused: {exc}") from exc


def _template_calls(calls: Any) -> Any:
    """Tool calls as chat templates expect them: arguments as objects, not JSON text."""
    if not isinstance(calls, list):
        raise Refused("invalid_request", "tool_calls must be a list")
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise Refused("invalid_request", "each tool call needs a function object")
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError as exc:
                raise Refused("invalid_request", "a tool call's arguments are not JSON") from exc
        out.append({**call, "function": {**fn, "arguments": args}})
    return out


def _text_of(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content)
