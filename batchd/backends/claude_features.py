"""Structured outputs and reasoning effort for Claude (README "Claude models").

`response_format`:
- `json_schema` on a model with Claude's native structured outputs
  (`STRUCTURED_OUTPUT_MODELS`: generally available, no beta header, on Opus 4.7 / 4.6 / 4.5,
  Sonnet 4.6 / 4.5 and Haiku 4.5) -> `output_config.format = {type: json_schema, schema}`:
  the answer's text is the JSON;
- `json_schema` on another Claude model -> one forced tool (`claude_tools.SCHEMA_TOOL`) whose
  `input_schema` is the schema; its input becomes `output_text` as JSON text. The schema must
  be of type object (a tool input is an object); the forced tool cannot be combined with
  other tools or with thinking (Claude forces no tool while thinking);
- `json_object` -> a forced tool with an open object schema (`claude_tools.OBJECT_TOOL`) on
  every Claude model (native structured outputs need a closed schema);
- `text` -> nothing to change.

`reasoning_effort` -> extended thinking `{type: enabled, budget_tokens}` by `THINKING_BUDGET`
(`none` asks for no reasoning: no thinking). Anthropic requires budget_tokens < max_tokens: a
max_tokens at or below the budget is raised to budget + max_tokens (max_tokens counts the
thinking and the answer, as OpenAI's max_completion_tokens counts reasoning). Thinking takes
no temperature other than 1, no top_k, a top_p from 0.95 to 1, and only auto / none tool
choice: a line asking for another is refused with the reason.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from batchd.backends.base import UnsupportedRequest
from batchd.backends.claude_tools import OBJECT_TOOL, SCHEMA_TOOL, forced_tool

# Claude models with native structured outputs (output_config.format), as Anthropic's
# structured-outputs docs list them (GA on the Claude API; aliases and dated ids).
STRUCTURED_OUTPUT_MODELS = (
    "claude-opus-4-7*",
    "claude-opus-4-6*",
    "claude-opus-4-5*",
    "claude-sonnet-4-6*",
    "claude-sonnet-4-5*",
    "claude-haiku-4-5*",
)
# reasoning_effort -> thinking budget_tokens (Anthropic's minimum budget is 1,024).
THINKING_BUDGET = {"minimal": 1024, "low": 4096, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024
NATIVE_EXAMPLE = "claude-sonnet-4-5"


def has_structured_outputs(model: str) -> bool:
    """Does this Claude model take output_config.format (native structured outputs)?"""
    return any(fnmatch.fnmatchcase(model, p) for p in STRUCTURED_OUTPUT_MODELS)


def response_format(params: dict[str, Any], fmt: Any, model: str) -> None:
    """Add what `response_format` asks for to Claude params (in place)."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text" and set(fmt) == {"type"}:
        return
    if kind == "json_object" and set(fmt) == {"type"}:
        _force(params, OBJECT_TOOL, {"type": "object"}, "Answer with a JSON object.", model)
        return
    if kind != "json_schema" or set(fmt) != {"type", "json_schema"}:
        raise UnsupportedRequest(
            "response_format must be {type: text}, {type: json_object} or {type: json_schema, "
            "json_schema: {name, schema, strict?, description?}} for Claude"
        )
    spec = fmt["json_schema"]
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise UnsupportedRequest("response_format.json_schema.schema must be a JSON schema object")
    extra = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if extra:
        raise UnsupportedRequest(f"response_format.json_schema.{extra[0]} is not supported")
    schema = spec["schema"]
    _check_schema(schema)
    if has_structured_outputs(model):
        config = params.setdefault("output_config", {})
        config["format"] = {"type": "json_schema", "schema": schema}
        return
    if schema.get("type") != "object":
        raise UnsupportedRequest(
            f"response_format with a schema that is not of type object: {model} has no native "
            f"structured outputs and a tool's input must be an object; use a model that has "
            f"them (e.g. {NATIVE_EXAMPLE}) or an OpenAI model"
        )
    description = spec.get("description") or "Answer with JSON valid against this schema."
    name = spec.get("name")
    if isinstance(name, str) and name:
        description = f"{description} (schema {name!r})"
    _force(params, SCHEMA_TOOL, schema, str(description), model)


def _check_schema(schema: dict[str, Any]) -> None:
    from jsonschema import validators
    from jsonschema.exceptions import SchemaError

    try:
        validators.validator_for(schema, default=validators.Draft202012Validator).check_schema(
            schema
        )
    except SchemaError as exc:
        raise UnsupportedRequest(
            f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}"
        ) from None
    except RecursionError:
        raise UnsupportedRequest("response_format.json_schema.schema nests too deeply") from None


def _force(
    params: dict[str, Any], name: str, schema: dict[str, Any], description: str, model: str
) -> None:
    if params.get("tools"):
        raise UnsupportedRequest(
            f"response_format together with tools: on {model} batchd answers response_format "
            f"through a forced tool, which leaves no room for yours; use a Claude model with "
            f"native structured outputs (e.g. {NATIVE_EXAMPLE}) for json_schema, or an OpenAI "
            "model"
        )
    params.update(forced_tool(name, schema, description))


def reasoning(params: dict[str, Any], effort: Any) -> None:
    """Extended thinking for `reasoning_effort` (in place); checks thinking's constraints."""
    if effort is None or effort == "none":
        return
    if not isinstance(effort, str) or effort not in THINKING_BUDGET:
        raise UnsupportedRequest(
            f"reasoning_effort {effort!r}: Claude takes none, {', '.join(THINKING_BUDGET)}"
        )
    if "thinking" in params:
        raise UnsupportedRequest("reasoning_effort together with thinking: give only one")
    budget = THINKING_BUDGET[effort]
    params["thinking"] = {"type": "enabled", "budget_tokens": budget}
    thinking_constraints(params)
    if params["max_tokens"] <= budget:
        params["max_tokens"] = budget + params["max_tokens"]


def thinking_constraints(params: dict[str, Any]) -> None:
    """Refuse what Claude's extended thinking does not take (Anthropic's thinking docs)."""
    why = "with reasoning_effort (Claude's extended thinking)"
    if params.get("temperature", 1) != 1:
        raise UnsupportedRequest(f"temperature {why}: thinking takes only temperature 1")
    if "top_k" in params:
        raise UnsupportedRequest(f"top_k {why}: thinking takes no top_k")
    if not 0.95 <= params.get("top_p", 1) <= 1:
        raise UnsupportedRequest(f"top_p {why}: thinking takes top_p from 0.95 to 1 only")
    choice = params.get("tool_choice") or {}
    if choice.get("name") in (SCHEMA_TOOL, OBJECT_TOOL):
        raise UnsupportedRequest(
            f"response_format {why} on this model: batchd answers it through a forced tool and "
            f"thinking forces none; use a model with native structured outputs (e.g. "
            f"{NATIVE_EXAMPLE}) for json_schema"
        )
    if choice.get("type") in ("any", "tool"):
        raise UnsupportedRequest(
            f"tool_choice required or a named tool {why}: thinking takes only auto or none"
        )
