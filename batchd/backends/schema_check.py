"""`schema_valid`: a successful answer checked against the JSON schema its line gave.

Applied where every chunk's outcomes are settled (`run.collect` for batches and the GPU,
`run.deadline_guard` for synchronous calls), with the chunk line as sent, whatever the
backend. The schema is read from the line in each backend's own shape:
- OpenAI-compatible and vLLM lines: `body.response_format` `{type: json_schema,
  json_schema: {schema}}` (and a Responses body's `text.format` `{type: json_schema, schema}`);
- Claude lines: `params.output_config.format` (or the beta `output_format`) `{type:
  json_schema, schema}`, or batchd's forced schema tool (`claude_tools.SCHEMA_TOOL`) and its
  `input_schema`;
- Gemini lines: `request.generationConfig.responseJsonSchema`.
No schema, or an answer that is only tool calls: `schema_valid` stays None. An answer that
is not JSON, or not valid against the schema, is False; so is one against a schema the
validator cannot use (invalid, unresolvable `$ref`s: remote references are never fetched, or
nesting too deep to check).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from batchd.backends.claude_tools import SCHEMA_TOOL
from batchd.backends.input_lists import spread_answers
from batchd.outcome import SUCCEEDED, Outcome

# Bytes that appear in a line that carries a schema (a cheap look before decoding it).
_MARKERS = (b"json_schema", b"responseJsonSchema", SCHEMA_TOOL.encode())
_dec = msgspec.json.Decoder()


def settle(o: Outcome, line: bytes) -> Outcome:
    """An outcome as its row holds it: several inputs' answers spread
    (`input_lists.spread_answers`), then `schema_valid` checked."""
    return check_outcome(spread_answers(o, line), line)


def check_outcome(o: Outcome, line: bytes) -> Outcome:
    """Set `o.schema_valid` for a successful outcome whose line gave a schema (in place)."""
    if o.status != SUCCEEDED or not any(m in line for m in _MARKERS):
        return o
    if o.output_text is None and o.tool_calls:
        return o  # the model called a tool: no final answer to check yet
    try:
        schema = line_schema(_dec.decode(line))
    except (msgspec.DecodeError, RecursionError):
        return o
    if schema is not None:
        o.schema_valid = is_valid(o.output_text, schema)
    return o


def line_schema(obj: Any) -> dict[str, Any] | None:
    """The JSON schema a chunk line asks the answer to follow, or None."""
    if not isinstance(obj, dict):
        return None
    body = obj.get("body")
    if isinstance(body, dict):
        found = _openai_schema(body)
        if found is not None:
            return found
    params = obj.get("params")
    if isinstance(params, dict):
        return _claude_schema(params)
    request = obj.get("request")
    if isinstance(request, dict):
        config = request.get("generationConfig")
        schema = config.get("responseJsonSchema") if isinstance(config, dict) else None
        return schema if isinstance(schema, dict) else None
    return None


def _openai_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else None
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def _claude_schema(params: dict[str, Any]) -> dict[str, Any] | None:
    config = params.get("output_config")
    native = config.get("format") if isinstance(config, dict) else None
    for fmt in (native, params.get("output_format")):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            return schema if isinstance(schema, dict) else None
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and choice.get("name") == SCHEMA_TOOL:
        for tool in params.get("tools") or []:
            if isinstance(tool, dict) and tool.get("name") == SCHEMA_TOOL:
                schema = tool.get("input_schema")
                return schema if isinstance(schema, dict) else None
    return None


def is_valid(text: str | None, schema: dict[str, Any]) -> bool:
    """Is `text` JSON valid against `schema`? Never raises; never fetches a remote $ref."""
    if text is None:
        return False
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return False
    try:
        return _validator(schema).is_valid(value)
    except Exception:  # a schema the validator cannot use: unresolvable $ref, bad regex, ...
        return False


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _validator(schema: dict[str, Any]) -> Any:
    from jsonschema import validators
    from referencing import Registry

    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, registry=Registry())
