"""Tools, structured outputs, images and extended thinking for the Anthropic emulator.

As Anthropic documents them:
- ``output_config.format`` ``{type: "json_schema", schema}`` (GA structured outputs) only on
  the models in :data:`STRUCTURED_OUTPUT_MODELS`; the beta ``output_format`` is refused (it
  moved to ``output_config.format``). The answer is one text block of JSON valid for the
  schema.
- client tools: ``input_schema`` must be a valid JSON schema of type object; ``tool_choice``
  ``any`` / ``tool`` make the model call (the first / the named) tool, ``auto`` calls a tool
  whose name appears in the last user text, ``none`` never; a call is a ``tool_use`` block
  (id ``toolu_...``, input valid for the schema) and ``stop_reason: "tool_use"``.
- images: a ``base64`` source needs ``media_type`` image/jpeg, image/png, image/gif or
  image/webp, valid base64 and bytes of that type; a ``url`` source an http(s) URL. A bad
  image fails that request (an ``errored`` result in a batch, a 400 from ``/v1/messages``).
- ``thinking`` ``{type: "enabled", budget_tokens}``: budget at least 1,024 and below
  ``max_tokens``; no temperature but 1, no top_k, top_p from 0.95 to 1, tool_choice only auto /
  none. The answer starts with a ``thinking`` block; its tokens are billed as output and
  reported in ``usage.output_tokens_details.thinking_tokens``.

The marker ``[[schema:invalid]]`` in the last user text makes the answer (or the tool input)
violate its schema: a model that did not follow it.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Callable
from typing import Any

from tests.emulators.schema_values import example, violation

JSONDict = dict[str, Any]
STRUCTURED_OUTPUT_MODELS = (
    "claude-opus-4-7*",
    "claude-opus-4-6*",
    "claude-opus-4-5*",
    "claude-sonnet-4-6*",
    "claude-sonnet-4-5*",
    "claude-haiku-4-5*",
)
IMAGE_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
INVALID_MARKER = "[[schema:invalid]]"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def schema_problem(schema: Any) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"JSON schema is invalid: {exc.message}"
    except RecursionError:
        return "JSON schema is nested too deeply"
    return None


def params_problem(params: JSONDict, where: str) -> str | None:
    """Create-time checks of output_config, output_format, thinking and tool schemas."""
    if "output_format" in params:
        return f"{where}.output_format: Extra inputs are not permitted (use output_config.format)"
    config = params.get("output_config")
    if config is not None:
        if not isinstance(config, dict):
            return f"{where}.output_config: Input should be a valid dictionary"
        fmt = config.get("format")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
                return f"{where}.output_config.format.type: Input should be 'json_schema'"
            if not isinstance(fmt.get("schema"), dict):
                return f"{where}.output_config.format.schema: Field required"
            problem = schema_problem(fmt["schema"])
            if problem is not None:
                return f"{where}.output_config.format.schema: {problem}"
            model = str(params.get("model"))
            if not any(fnmatch.fnmatchcase(model, p) for p in STRUCTURED_OUTPUT_MODELS):
                return (
                    f"{where}.output_config.format: model '{model}' does not support structured "
                    "outputs"
                )
    for index, tool in enumerate(params.get("tools") or []):
        if isinstance(tool, dict) and isinstance(tool.get("input_schema"), dict):
            problem = schema_problem(tool["input_schema"])
            if problem is not None:
                return f"{where}.tools.{index}.custom.input_schema: {problem}"
    return _thinking_problem(params, where)


def _thinking_problem(params: JSONDict, where: str) -> str | None:
    thinking = params.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        return f"{where}.thinking.type: Input should be 'enabled' or 'disabled'"
    if thinking["type"] == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return f"{where}.thinking.enabled.budget_tokens: Field required"
    if budget < 1024:
        return (
            f"{where}.thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if budget >= params["max_tokens"]:
        return f"{where}: `max_tokens` must be greater than `thinking.budget_tokens`"
    if params.get("temperature", 1) != 1:
        return f"{where}: `temperature` may only be set to 1 when thinking is enabled"
    if "top_k" in params:
        return f"{where}: `top_k` may not be set when thinking is enabled"
    top_p = params.get("top_p", 1)
    if not isinstance(top_p, (int, float)) or not 0.95 <= top_p <= 1:
        return f"{where}: `top_p` must be between 0.95 and 1 when thinking is enabled"
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        return f"{where}: Thinking may not be enabled when tool_choice forces tool use."
    return None


def image_problem(params: JSONDict) -> str | None:
    """The first bad image block of the request (checked while it is processed)."""
    for index, message in enumerate(params.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        for number, block in enumerate(content if isinstance(content, list) else []):
            inner = block.get("content") if isinstance(block, dict) else None
            nested = list(enumerate(inner if isinstance(inner, list) else []))
            for sub, b in [(None, block), *nested]:
                if isinstance(b, dict) and b.get("type") == "image":
                    at = f"messages.{index}.content.{number}" + (f".content.{sub}" if sub else "")
                    problem = _one_image(b, at)
                    if problem is not None:
                        return problem
    return None


def _one_image(block: JSONDict, at: str) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return f"{at}.image.source: Field required"
    kind = source.get("type")
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url):
            return f"{at}.image.source.url: Input should be a valid URL"
        return None
    if kind != "base64":
        return f"{at}.image.source.type: Input should be 'base64', 'url' or 'file'"
    media_type = source.get("media_type")
    if media_type not in IMAGE_MAGIC:
        return (
            f"{at}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    data = source.get("data")
    try:
        if not isinstance(data, str) or len(data) % 4 or not _BASE64.fullmatch(data):
            raise ValueError
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return f"{at}.image.source.base64.data: The image data is not valid base64"
    if not raw.startswith(IMAGE_MAGIC[media_type]) or (
        media_type == "image/webp" and raw[8:12] != b"WEBP"
    ):
        return f"{at}.image.source.base64: Image does not match the provided media type " + str(
            media_type
        )
    return None


def last_turn_text(params: JSONDict) -> str:
    """The last user turn's text, with its tool results' content (a tool-result round trip)."""
    for message in reversed(params.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        parts = []
        for block in content if isinstance(content, list) else []:
            if block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    inner = " ".join(b.get("text", "") for b in inner if isinstance(b, dict))
                parts.append(f"tool result: {inner or ''}")
        return " ".join(p for p in parts if p)
    return ""


def structured_answer(
    params: JSONDict, text: str, new_id: Callable[[str], str]
) -> tuple[list[JSONDict], str] | None:
    """(content, stop_reason) for a tool call or a JSON-schema answer; None: a plain answer."""
    invalid = INVALID_MARKER in text
    tool = _called_tool(params, text)
    if tool is not None:
        schema = tool.get("input_schema") or {}
        value = example(schema) if not invalid else _bad_input(schema)
        if not isinstance(value, dict):
            value = {}
        use = {"type": "tool_use", "id": new_id("toolu_"), "name": tool["name"], "input": value}
        return [use], "tool_use"
    fmt = (params.get("output_config") or {}).get("format")
    if isinstance(fmt, dict):
        value = violation(fmt["schema"]) if invalid else example(fmt["schema"])
        return [{"type": "text", "text": json.dumps(value)}], "end_turn"
    return None


def _bad_input(schema: JSONDict) -> JSONDict:
    required = schema.get("required")
    if isinstance(required, list) and required:
        return {}
    return {"batchd_emulator_unexpected": ["not", "asked"]}


def _called_tool(params: JSONDict, text: str) -> JSONDict | None:
    tools = [
        t
        for t in params.get("tools") or []
        if isinstance(t, dict) and t.get("type", "custom") == "custom"
    ]
    choice = params.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    if choice.get("type") == "any":
        return tools[0]
    if "tool result:" in text:
        return None  # the tool answered: the model answers in text
    return next((t for t in tools if t["name"] in text), None)


def thinking_block(params: JSONDict, text: str, new_id: Callable[[str], str]) -> JSONDict | None:
    thinking = params.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    words = ("Let me think about: " + text).split()[: thinking["budget_tokens"]]
    return {"type": "thinking", "thinking": " ".join(words), "signature": new_id("sig_")}
