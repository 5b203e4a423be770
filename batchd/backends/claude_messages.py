"""OpenAI-style chat bodies -> Claude Messages params (the Message Batches `params`).

Translated, in the shapes Anthropic's Messages API documents:
- turns (`claude_turns`): system prompts, user / assistant turns, tool calls and results;
- content (`claude_content`): text parts, `image_url` parts -> image blocks;
- `tools`, `tool_choice` (`claude_tools`), and `parallel_tool_calls: false` ->
  `disable_parallel_tool_use`;
- `response_format` and `reasoning_effort` (`claude_features`): structured outputs, thinking;
- temperature (at most 1), top_p, stop, user.
Whatever has no Claude equivalent raises UnsupportedRequest naming it, and where it helps a
target that has it: nothing is dropped silently. Anthropic-format lines are Claude params
already and pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from batchd.backends import claude_features, claude_tools
from batchd.backends.base import UnsupportedRequest
from batchd.backends.claude_content import HINT
from batchd.backends.claude_turns import system_param, turns
from batchd.requests import Request

_DIRECT = ("temperature", "top_p")
# Claude's own parameters, accepted as they are in native-format lines.
_CLAUDE_NATIVE = frozenset(
    {"top_k", "stop_sequences", "thinking", "tools", "tool_choice", "service_tier", "output_config"}
)
_IGNORED_WHEN: dict[str, Any] = {
    "stream": False,
    "n": 1,
    "parallel_tool_calls": True,
    "logprobs": False,
}
_HANDLED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "response_format"}
    | {"reasoning_effort"}
)
# Parameters Claude lacks, and where the line could go instead.
_ELSEWHERE = {
    "n": "n > 1 (Claude answers once per request; OpenAI models such as gpt-5.4-mini take n)",
    "logprobs": "logprobs (Claude reports none; OpenAI models such as gpt-4.1-mini do)",
    "top_logprobs": "top_logprobs (Claude reports none; OpenAI models such as gpt-4.1-mini do)",
    "seed": "seed (Claude has no seed; OpenAI and Gemini models and vLLM take one)",
}


def to_claude_params(request: Request, default_max_tokens: int) -> dict[str, Any]:
    """Anthropic params for a request; Anthropic-format lines pass through unchanged."""
    if request.source_params is not None:
        if request.source_params.get("stream"):
            # The vendor would reject the whole batch for this one line.
            raise UnsupportedRequest("stream is not supported in batches; remove params.stream")
        return request.source_params
    body = request.body
    native = request.fmt == "native"
    system, messages = turns(body["messages"])
    params: dict[str, Any] = {"model": request.model}
    if system:
        params["system"] = system_param(system)
    params["messages"] = messages
    params["max_tokens"] = (
        body.get("max_tokens") or body.get("max_completion_tokens") or default_max_tokens
    )
    unsupported = []
    for name, value in body.items():
        if name in _HANDLED or (name in _IGNORED_WHEN and value == _IGNORED_WHEN[name]):
            continue
        if name in _DIRECT:
            if type(value) not in (int, float):
                unsupported.append(f"{name} that is not a number")
            elif name == "temperature" and value > 1:
                unsupported.append("temperature above 1")
            else:
                params[name] = value
        elif name == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops):
                unsupported.append("stop that is not a string or a list of strings")
            else:
                params["stop_sequences"] = stops
        elif name == "user":
            if isinstance(value, str):
                params["metadata"] = {"user_id": value}
            else:
                unsupported.append("user that is not a string")
        elif name == "tools":
            params["tools"] = claude_tools.tools(value, native)
        elif name == "tool_choice":
            params["tool_choice"] = claude_tools.tool_choice(value, native)
        elif name == "parallel_tool_calls" and value is False:
            continue  # folded into tool_choice below
        elif name in _CLAUDE_NATIVE and native:
            params[name] = value
        else:
            unsupported.append(_ELSEWHERE.get(name, name))
    if unsupported:
        raise UnsupportedRequest(
            "not supported for Claude models: " + ", ".join(sorted(unsupported)) + HINT
        )
    claude_tools.check_choice_has_tools(params)
    if body.get("response_format") is not None:
        claude_features.response_format(params, body["response_format"], request.model)
    claude_features.reasoning(params, body.get("reasoning_effort"))
    if body.get("parallel_tool_calls") is False:
        choice = params.setdefault("tool_choice", {"type": "auto"})
        if choice.get("type") == "none":
            raise UnsupportedRequest(
                "parallel_tool_calls: false with tool_choice none means nothing for Claude" + HINT
            )
        params["tool_choice"] = {**choice, "disable_parallel_tool_use": True}
    return params
