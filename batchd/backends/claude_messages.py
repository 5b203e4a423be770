"""OpenAI-style chat bodies -> Claude Messages params (the Message Batches `params`).

Translated, in the shapes Anthropic's Messages API documents:
- leading system / developer turns -> `system` (a string, or text blocks);
- user and assistant turns -> messages; text parts -> text blocks;
- an assistant turn's `tool_calls` -> `tool_use` blocks {type, id, name, input} after its
  text; a `tool` turn -> a `tool_result` block {type, tool_use_id, content} in a user
  turn (consecutive tool turns share one user turn, results first);
- `tools` (OpenAI function tools) -> {name, description, input_schema, strict};
  `tool_choice` auto / required / none / a named function -> {type: auto | any | none |
  tool, name}, and `parallel_tool_calls: false` -> `disable_parallel_tool_use`;
- temperature (at most 1), top_p, stop, user.
Whatever has no Claude equivalent raises UnsupportedRequest naming it: nothing is dropped
silently. Anthropic-format lines are Claude params already and pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batchd.backends.base import UnsupportedRequest
from batchd.requests import Request

_DIRECT = ("temperature", "top_p")
# Claude's own parameters, accepted as they are in native-format lines.
_CLAUDE_NATIVE = frozenset(
    {"top_k", "stop_sequences", "thinking", "tools", "tool_choice", "service_tier"}
)
_IGNORED_WHEN: dict[str, Any] = {"stream": False, "n": 1, "parallel_tool_calls": True}
_HANDLED = frozenset({"model", "messages", "max_tokens", "max_completion_tokens"})
# Message keys each role may carry (null for the optional ones is the same as absent).
_MESSAGE_KEYS = {
    "system": {"role", "content"},
    "developer": {"role", "content"},
    "user": {"role", "content"},
    "assistant": {"role", "content", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}
_NULL_OK = {"refusal", "function_call", "audio", "name", "tool_calls"}
_TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}
_HINT = "; remove it, or use the Anthropic batch format for Claude-specific params"


def to_claude_params(request: Request, default_max_tokens: int) -> dict[str, Any]:
    """Anthropic params for a request; Anthropic-format lines pass through unchanged."""
    if request.source_params is not None:
        if request.source_params.get("stream"):
            # The vendor would reject the whole batch for this one line.
            raise UnsupportedRequest("stream is not supported in batches; remove params.stream")
        return request.source_params
    body = request.body
    native = request.fmt == "native"
    system, messages = _turns(body["messages"])
    params: dict[str, Any] = {"model": request.model}
    if system:
        params["system"] = (
            "\n\n".join(system)
            if all(isinstance(s, str) for s in system)
            else [b for s in system for b in _blocks(s, "system")]
        )
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
            params["tools"] = _tools(value, native)
        elif name == "tool_choice":
            params["tool_choice"] = _tool_choice(value, native)
        elif name == "parallel_tool_calls" and value is False:
            continue  # folded into tool_choice below
        elif name in _CLAUDE_NATIVE and native:
            params[name] = value
        else:
            unsupported.append(name)
    if unsupported:
        raise UnsupportedRequest(
            "not supported for Claude models: " + ", ".join(sorted(unsupported)) + _HINT
        )
    if body.get("parallel_tool_calls") is False:
        choice = params.setdefault("tool_choice", {"type": "auto"})
        if choice.get("type") == "none":
            raise UnsupportedRequest(
                "parallel_tool_calls: false with tool_choice none means nothing for Claude" + _HINT
            )
        params["tool_choice"] = {**choice, "disable_parallel_tool_use": True}
    return params


def _turns(openai_messages: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """(system parts, Claude messages) for the chat messages."""
    system: list[Any] = []
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(openai_messages):
        role = m["role"]
        where = f"messages[{i}]"
        _check_keys(m, role, where)
        if role in ("system", "developer") and not messages:
            system.append(_text_content(m["content"], where))
        elif role == "user":
            _append(messages, "user", _blocks(m["content"], where), m["content"])
        elif role == "assistant":
            plain = m["content"] if not m.get("tool_calls") else None
            _append(messages, "assistant", _assistant_blocks(m, where), plain)
        elif role == "tool":
            _append(messages, "user", [_tool_result(m, where)], None, tool=True)
        else:
            raise UnsupportedRequest(
                f"a {role!r} message{' after the conversation started' if role == 'system' else ''}"
                " cannot be sent to Claude; put system prompts first and use user, assistant "
                "and tool turns"
            )
    if not messages:
        raise UnsupportedRequest("Claude needs at least one user message besides the system prompt")
    for m in messages:
        m.pop("_tool", None)
    return system, messages


def _check_keys(m: dict[str, Any], role: str, where: str) -> None:
    allowed = _MESSAGE_KEYS.get(role)
    if allowed is None:
        return  # the role itself is refused by the caller
    extra = sorted(k for k in m if k not in allowed and not (k in _NULL_OK and m[k] is None))
    if extra:
        raise UnsupportedRequest(
            f"not supported for Claude models: {', '.join(f'{where}.{k}' for k in extra)} "
            "(Claude messages have no such field)" + _HINT
        )


def _append(
    messages: list[dict[str, Any]],
    role: str,
    blocks: list[dict[str, Any]],
    plain: Any,
    tool: bool = False,
) -> None:
    """Add a turn (as the string `plain` when it is one); a tool result, and a user turn
    after tool results, join the user turn of those results."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "user" and role == "user" and last.get("_tool"):
        last["content"].extend(blocks)
        last["_tool"] = tool
        return
    if tool:
        messages.append({"role": "user", "content": blocks, "_tool": True})
    elif isinstance(plain, str):
        messages.append({"role": role, "content": plain})
    else:
        messages.append({"role": role, "content": blocks})


def _text_content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    return _blocks(content, where)


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Text parts as Claude text blocks (a string as one block); Claude refuses empty ones."""
    if isinstance(content, str):
        if not content:
            raise UnsupportedRequest(f"{where}.content is empty, which Claude refuses")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise UnsupportedRequest(f"{where}.content must be a string or a non-empty list of parts")
    blocks = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text" or not isinstance(part.get("text"), str):
            raise UnsupportedRequest(
                f"message part of type {kind!r} ({at}) is not supported for Claude"
            )
        if not part["text"]:
            raise UnsupportedRequest(f"{at} has an empty text, which Claude refuses")
        extra = sorted(set(part) - {"type", "text", "cache_control"})
        if extra:
            raise UnsupportedRequest(f"not supported for Claude models: {at}.{extra[0]}" + _HINT)
        if "cache_control" in part and not _cache_control_ok(part["cache_control"]):
            raise UnsupportedRequest(
                f'{at}.cache_control must be {{"type": "ephemeral"}} (ttl "5m" or "1h")'
            )
        blocks.append(part)
    return blocks


def _cache_control_ok(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "ephemeral"
        and value.get("ttl", "5m") in ("5m", "1h")
        and set(value) <= {"type", "ttl"}
    )


def _assistant_blocks(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    content = m.get("content")
    blocks = [] if content is None or content == "" else _blocks(content, where)
    calls = m.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UnsupportedRequest(f"{where}.tool_calls must be a list of tool calls")
    for j, call in enumerate(calls):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    if not blocks:
        raise UnsupportedRequest(f"{where} has neither content nor tool_calls; Claude needs one")
    return blocks


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        kind = call.get("type") if isinstance(call, dict) else type(call).__name__
        raise UnsupportedRequest(f"{where}: a tool call of type {kind!r} is not supported")
    fn = call.get("function")
    call_id = call.get("id")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise UnsupportedRequest(f"{where}.function.name is missing")
    if not isinstance(call_id, str) or not call_id:
        raise UnsupportedRequest(f"{where}.id is missing: Claude pairs tool results by id")
    args = fn.get("arguments", "{}")
    try:
        value = msgspec.json.decode(args) if isinstance(args, str) else args
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise UnsupportedRequest(
            f"{where}.function.arguments is not a JSON object, which Claude's tool_use input "
            "must be"
        )
    extra = sorted(set(call) - {"id", "type", "function"}) + sorted(
        f"function.{k}" for k in set(fn) - {"name", "arguments"}
    )
    if extra:
        raise UnsupportedRequest(f"{where}: {', '.join(extra)} not supported for Claude" + _HINT)
    return {"type": "tool_use", "id": call_id, "name": fn["name"], "input": value}


def _tool_result(m: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = m.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise UnsupportedRequest(f"{where}.tool_call_id is missing: Claude pairs results by id")
    content = m.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if content is not None:
        block["content"] = content if isinstance(content, str) else _blocks(content, where)
    return block


def _tools(tools: Any, native: bool) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise UnsupportedRequest("tools must be a list of function tools")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if native and isinstance(tool, dict) and tool.get("type") != "function":
            out.append(_claude_tool(tool, where))  # already a Claude tool (custom or server)
            continue
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise UnsupportedRequest(f"{where}: a tool of type {kind!r} is not supported")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise UnsupportedRequest(f"{where}.function.name is missing")
        extra = sorted(set(tool) - {"type", "function"}) + sorted(
            f"function.{k}" for k in set(fn) - {"name", "description", "parameters", "strict"}
        )
        if extra:
            raise UnsupportedRequest(
                f"{where}: {', '.join(extra)} not supported for Claude" + _HINT
            )
        schema = fn.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise UnsupportedRequest(
                f"{where}.function.parameters must be a JSON schema of type object for Claude"
            )
        claude: dict[str, Any] = {"name": fn["name"], "input_schema": {"type": "object", **schema}}
        if fn.get("description") is not None:
            claude["description"] = fn["description"]
        if fn.get("strict") is not None:
            claude["strict"] = fn["strict"]
        out.append(claude)
    return out


def _claude_tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    """A Claude-shaped tool of a native line, checked as the Messages API checks it."""
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise UnsupportedRequest(f"{where}.name is missing")
    if tool.get("type", "custom") == "custom":
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise UnsupportedRequest(f"{where}.input_schema must be a JSON schema of type object")
    return tool


def _tool_choice(choice: Any, native: bool) -> dict[str, Any]:
    if isinstance(choice, str) and choice in _TOOL_CHOICE:
        return {"type": _TOOL_CHOICE[choice]}
    if isinstance(choice, dict):
        if native and choice.get("type") in ("auto", "any", "tool", "none"):
            return choice  # already Claude's
        fn = choice.get("function")
        if (
            choice.get("type") == "function"
            and isinstance(fn, dict)
            and isinstance(fn.get("name"), str)
            and set(choice) == {"type", "function"}
            and set(fn) == {"name"}
        ):
            return {"type": "tool", "name": fn["name"]}
    raise UnsupportedRequest(
        "tool_choice must be auto, required, none or {type: function, function: {name}} for "
        "Claude" + _HINT
    )
