"""Tools between OpenAI's shape and Claude's, both ways.

Requests: OpenAI function tools -> Claude tools {name, description, input_schema, strict};
`tool_choice` auto / required / none / a named function -> {type: auto | any | none | tool,
name}; an assistant turn's `tool_calls` -> `tool_use` blocks. Answers: Claude `tool_use`
blocks -> OpenAI `tool_calls` ([{id, type: "function", function: {name, arguments: JSON
text}}]). batchd's own forced tools (structured output on a model without Claude's native
structured outputs, and `json_object`) carry reserved names: their input is the answer's
text, not a tool call.
"""

from __future__ import annotations

from typing import Any

import msgspec

from batchd.backends.base import UnsupportedRequest
from batchd.backends.claude_content import HINT

# batchd's forced tools: the answer as a schema's JSON (json_schema) or any JSON object.
SCHEMA_TOOL = "batchd_structured_output"
OBJECT_TOOL = "batchd_json_object"
RESERVED_TOOLS = frozenset({SCHEMA_TOOL, OBJECT_TOOL})
_TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}
_enc = msgspec.json.Encoder()


def tools(value: Any, native: bool) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise UnsupportedRequest("tools must be a list of function tools")
    out = []
    for i, tool in enumerate(value):
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
        _not_reserved(fn["name"], where)
        extra = sorted(set(tool) - {"type", "function"}) + sorted(
            f"function.{k}" for k in set(fn) - {"name", "description", "parameters", "strict"}
        )
        if extra:
            raise UnsupportedRequest(f"{where}: {', '.join(extra)} not supported for Claude" + HINT)
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


def _not_reserved(name: Any, where: str) -> None:
    if name in RESERVED_TOOLS:
        raise UnsupportedRequest(f"{where}: the tool name {name!r} is reserved by batchd")


def _claude_tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    """A Claude-shaped tool of a native line, checked as the Messages API checks it."""
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise UnsupportedRequest(f"{where}.name is missing")
    _not_reserved(tool["name"], where)
    if tool.get("type", "custom") == "custom":
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise UnsupportedRequest(f"{where}.input_schema must be a JSON schema of type object")
    return tool


def tool_choice(choice: Any, native: bool) -> dict[str, Any]:
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
        "Claude" + HINT
    )


def check_choice_has_tools(params: dict[str, Any]) -> None:
    """A tool_choice that forces a tool needs that tool among the tools (OpenAI refuses it
    too: "tool_choice is only allowed when tools are specified")."""
    choice = params.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") not in ("any", "tool"):
        return
    names = {t.get("name") for t in params.get("tools") or [] if isinstance(t, dict)}
    if not names:
        raise UnsupportedRequest(
            "tool_choice required or a named function needs tools; the line has none" + HINT
        )
    if choice["type"] == "tool" and choice.get("name") not in names:
        raise UnsupportedRequest(
            f"tool_choice names the function {choice.get('name')!r}, which is not among the "
            "line's tools" + HINT
        )


def tool_use(call: Any, where: str) -> dict[str, Any]:
    """One OpenAI tool call of an assistant turn -> a Claude tool_use block."""
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
        raise UnsupportedRequest(f"{where}: {', '.join(extra)} not supported for Claude" + HINT)
    return {"type": "tool_use", "id": call_id, "name": fn["name"], "input": value}


def forced_tool(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """Params of a single forced tool whose input is the answer."""
    return {
        "tools": [{"name": name, "description": description, "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": name},
    }


def answer_of(content: list[Any]) -> tuple[str | None, str | None, bool]:
    """(text, tool_calls JSON text or None, forced) of a Claude answer's content blocks.

    `forced`: the answer came through batchd's forced tool, whose input (as JSON text) is
    the text. Text blocks are joined; thinking blocks are not part of the answer.
    """
    text = "".join(_get(b, "text") or "" for b in content if _get(b, "type") == "text")
    uses = [b for b in content if _get(b, "type") == "tool_use"]
    forced = [b for b in uses if _get(b, "name") in RESERVED_TOOLS]
    if forced and len(uses) == 1:
        return _enc.encode(_get(forced[0], "input")).decode(), None, True
    if not uses:
        return text, None, False
    calls = [
        {
            "id": _get(b, "id"),
            "type": "function",
            "function": {
                "name": _get(b, "name"),
                "arguments": _enc.encode(_get(b, "input")).decode(),
            },
        }
        for b in uses
    ]
    return text or None, _enc.encode(calls).decode(), False


def _get(block: Any, name: str) -> Any:
    return block.get(name) if isinstance(block, dict) else getattr(block, name, None)
