"""Structured outputs and tools on vLLM: request constraints in, tool calls out.

- `response_format` `json_schema` -> vLLM structured outputs `json` (the schema),
  `json_object` -> `json_object`; the answer is checked against the schema (`schema_valid`).
- `tool_choice` naming a function -> structured outputs with that tool's `parameters` as the
  schema: the answer is the call's arguments. `required` -> a schema for a list of calls
  (`name` + `parameters` per tool, at least one; one only with `parallel_tool_calls: false`).
- `tool_choice` `auto` (the default when `tools` are given) -> free generation, then the
  model's tool-call parser (`tool_parser` in settings, vLLM's parsers such as `hermes`);
  without a parser the request is refused. `none` -> plain text.

Every JSON constraint is compact (`disable_any_whitespace`, set on the engine by
`engine.start_engine`): the grammar then allows no whitespace between tokens, so a model
cannot spend its tokens on blanks (random weights do, until max_tokens cuts the JSON short).

Calls come back in OpenAI's shape: `[{"id", "type": "function", "function": {"name",
"arguments"}}]` with `finish_reason` `tool_calls`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from batchd.backends.vllm.refusal import Refused

NO_TOOLS, NAMED, REQUIRED, AUTO = "none", "named", "required", "auto"


@dataclass
class Constraint:
    """What a request asks of the answer's form."""

    structured: dict[str, Any] | None = None  # StructuredOutputsParams keywords
    schema: dict[str, Any] | None = None  # response_format's JSON schema (schema_valid)
    tool_mode: str = NO_TOOLS  # none | named | required | auto
    tool_name: str = ""  # named: the function
    tools: list[dict[str, Any]] = field(default_factory=list)  # the functions (OpenAI shape)


def constraint_of(body: dict[str, Any], tool_parser: str) -> Constraint:
    """The request's response_format / tools / tool_choice; Refused when vLLM cannot do it."""
    c = Constraint()
    fmt = body.get("response_format")
    if fmt is not None:
        _response_format(fmt, c)
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none"):
            raise Refused("invalid_request", "tool_choice is given without tools")
        return c
    c.tools = _functions(tools)
    if choice is None:
        choice = "auto" if c.tools else "none"
    if choice == "none" or not c.tools:
        return c
    if c.structured is not None:
        raise Refused(
            "unsupported_parameter",
            "response_format together with tools is not supported on vLLM: give one of them "
            "(or tool_choice none)",
        )
    if choice == "auto":
        if not tool_parser:
            raise Refused(
                "unsupported_parameter",
                "tool_choice auto needs a tool-call parser for this model, and none is set: "
                "set tool_parser (e.g. hermes) in its [backends.vllm] settings, or send "
                'tool_choice "required" or a named function',
            )
        c.tool_mode = AUTO
    elif choice == "required":
        c.tool_mode = REQUIRED
        parallel = body.get("parallel_tool_calls") is not False
        c.structured = _json(_calls_schema(c.tools, parallel))
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        tool = next((t for t in c.tools if t["name"] == name), None)
        if tool is None:
            raise Refused("invalid_request", f"tool_choice names {name!r}, which is not in tools")
        c.tool_mode, c.tool_name = NAMED, str(name)
        c.structured = _json(_parameters(tool))
    else:
        raise Refused(
            "invalid_request",
            'tool_choice must be "none", "auto", "required" or {"type": "function", '
            '"function": {"name": ...}}',
        )
    return c


def _json(value: dict[str, Any] | bool) -> dict[str, Any]:
    """StructuredOutputsParams keywords for a JSON constraint (a schema, or any object)."""
    if value is True:
        return {"json_object": True}
    return {"json": value}


def _response_format(fmt: Any, c: Constraint) -> None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        c.structured = _json(True)
        return
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise Refused(
                "invalid_request", "response_format json_schema needs json_schema.schema (object)"
            )
        c.schema = schema
        c.structured = _json(schema)
        return
    raise Refused(
        "unsupported_parameter",
        "response_format must be {type: text | json_object | json_schema} on vLLM",
    )


def _functions(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise Refused("invalid_request", "tools must be a list")
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            raise Refused(
                "unsupported_parameter",
                f"tools[{i}]: only function tools are supported on vLLM "
                '({"type": "function", "function": {"name", "parameters"}})',
            )
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise Refused("invalid_request", f"tools[{i}].function.name must be a string")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise Refused("invalid_request", f"tools[{i}].function.parameters must be an object")
        out.append({**fn, "parameters": params})
    return out


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    return dict(tool["parameters"])


def _calls_schema(tools: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """A JSON list of calls: each {"name": <one tool>, "parameters": <its schema>}."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"type": "string", "enum": [t["name"]]}, "parameters": p},
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for t in tools
        for p in [_parameters(t)]
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def forced_calls(c: Constraint, text: str) -> list[dict[str, Any]] | None:
    """The calls a named / required answer holds (None: the text is not a complete call,
    e.g. cut by max_tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if c.tool_mode == NAMED:
        return [_call(c.tool_name, json.dumps(value, ensure_ascii=False))]
    if not isinstance(value, list):
        return None
    calls = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        args = json.dumps(item.get("parameters", {}), ensure_ascii=False)
        calls.append(_call(item["name"], args))
    return calls or None


def parsed_calls(
    parser_name: str, tokenizer: Any, body: dict[str, Any], text: str
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(calls, remaining content) from vLLM's tool-call parser for an `auto` answer."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    request = ChatCompletionRequest.model_validate(
        {
            "model": str(body.get("model", "")),
            "messages": body.get("messages", []),
            "tools": body.get("tools"),
            "tool_choice": "auto",
        }
    )
    tools: Any = request.tools
    parser = ToolParserManager.get_tool_parser(parser_name)(tokenizer, tools)
    info = parser.extract_tool_calls(text, request)
    if not info.tools_called or not info.tool_calls:
        return None, text
    calls = [_call(tc.function.name, tc.function.arguments) for tc in info.tool_calls]
    return calls, info.content


def schema_valid(schema: dict[str, Any] | None, text: str | None) -> bool | None:
    """Does the answer meet the line's JSON schema? None: the line gave none."""
    if schema is None:
        return None
    import jsonschema

    try:
        value = json.loads(text or "")
    except ValueError:
        return False
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    except jsonschema.SchemaError:
        return False
    return True
