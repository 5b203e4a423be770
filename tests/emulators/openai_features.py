"""Tools, structured outputs, n and reasoning for the OpenAI emulator's chat completions.

As OpenAI documents them:
- ``tools`` (``{type: "function", function: {name, parameters?}}``) with ``tool_choice``
  ``required`` (call the first tool), a named function (call it), ``none`` (never) or
  ``auto`` (the default: call a tool whose name appears in the last user text). A call is
  ``message.tool_calls = [{id: "call_...", type: "function", function: {name, arguments}}]``
  (arguments: JSON text valid for the parameters), ``content: null`` and ``finish_reason:
  "tool_calls"``. After a ``tool`` turn the model answers in text: ``"echo: tool result: ..."``.
- ``response_format`` ``{type: "json_schema", json_schema: {name, schema, strict?}}``: the
  content is JSON valid for the schema (``name`` and a valid ``schema`` required, else 400);
  ``{type: "json_object"}``: a JSON object.
- ``n``: that many choices; ``reasoning_effort`` (not ``none``): 16 reasoning tokens, billed
  in ``completion_tokens`` and reported in ``completion_tokens_details.reasoning_tokens``.
The marker ``[[schema:invalid]]`` in the last user text makes the JSON (or the arguments)
violate the schema: a model that did not follow it; ``[[schema:invalid@<model>]]`` does so
only when the request names that model (a weaker model of a cascade).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.emulators.anthropic_features import INVALID_MARKER, schema_problem
from tests.emulators.schema_values import example, violation

JSONDict = dict[str, Any]
REASONING_TOKENS = 16
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def body_problem(body: JSONDict) -> tuple[str, str] | None:
    """(message, param) of a 400 for the tools / response_format / n / effort of a body."""
    tools = body.get("tools")
    names = []
    if tools is not None:
        if not isinstance(tools, list):
            return "Invalid type for 'tools': expected an array.", "tools"
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return f"Missing required parameter: 'tools[{i}].function.name'.", f"tools[{i}]"
            if "parameters" in fn and schema_problem(fn["parameters"]) is not None:
                return f"Invalid schema for function '{fn['name']}'.", f"tools[{i}].function"
            names.append(fn["name"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            return f"Invalid value for 'tool_choice': no function named '{name}'.", "tool_choice"
    elif choice is not None and choice not in ("auto", "none", "required"):
        return "Invalid value for 'tool_choice'.", "tool_choice"
    elif choice == "required" and not names:
        return "'tool_choice' is 'required' but no tools were given.", "tool_choice"
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return "Invalid value for 'response_format.type'.", "response_format.type"
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                return "Missing required parameter: 'response_format.json_schema.name'.", (
                    "response_format.json_schema.name"
                )
            if not isinstance(spec.get("schema"), dict) or schema_problem(spec["schema"]):
                return "Invalid schema for response_format.", "response_format.json_schema.schema"
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        return "Invalid value for 'n': expected an integer from 1 to 128.", "n"
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        return "Invalid value for 'reasoning_effort'.", "reasoning_effort"
    return None


def last_text(messages: list[Any], user_text: str) -> str:
    """The text the answer echoes: after a tool turn, that tool's result."""
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        content = last.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return f"tool result: {content}"
    return user_text


def featured_message(
    body: JSONDict, text: str, new_id: Callable[[str], str]
) -> tuple[JSONDict, str, int] | None:
    """(message, finish_reason, completion tokens) for a tool call or a JSON answer; None:
    a plain answer."""
    invalid = INVALID_MARKER in text or f"[[schema:invalid@{body.get('model')}]]" in text
    tool = _called(body, text)
    if tool is not None:
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        args = json.dumps(violation(schema) if invalid else example(schema))
        call = {
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": tool["name"], "arguments": args},
        }
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        return message, "tool_calls", len(args) // 4 + 1
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        schema = fmt["json_schema"]["schema"]
        content = json.dumps(violation(schema) if invalid else example(schema))
    elif kind == "json_object":
        content = json.dumps({"echo": text})
    else:
        return None
    message = {"role": "assistant", "content": content, "refusal": None}
    return message, "stop", len(content) // 4 + 1


def _called(body: JSONDict, text: str) -> JSONDict | None:
    fns = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice", "auto")
    if not fns or choice == "none":
        return None
    if isinstance(choice, dict):
        return next(f for f in fns if f["name"] == choice["function"]["name"])
    if choice == "required":
        return fns[0]
    if text.startswith("tool result:"):
        return None
    return next((f for f in fns if f["name"] in text), None)


def reasoning_tokens(body: JSONDict) -> int:
    return REASONING_TOKENS if body.get("reasoning_effort") not in (None, "none") else 0
