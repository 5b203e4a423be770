"""OpenAI-style chat (and the native and Anthropic formats) -> a Gemini GenerateContentRequest.

The result is the REST body of `models/{model}:generateContent` (camelCase, as the Gemini
Developer API takes it in batch input lines): `contents`, `systemInstruction`,
`generationConfig`, `tools`, `toolConfig`. What cannot be expressed raises
UnsupportedRequest naming it; nothing is dropped silently.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from batchd.backends.base import UnsupportedRequest
from batchd.requests import Request

# OpenAI-style parameter -> generationConfig field, copied as they are.
_CONFIG = {
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
# Extra parameters accepted from native and Anthropic-format lines (Claude and Gemini words).
_NATIVE_CONFIG = {"top_k": "topK", "stop_sequences": "stopSequences"}
_IGNORED_WHEN = {"stream": False, "n": 1}
_HANDLED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "response_format"}
    | {"tools", "tool_choice"}
)
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.S)

_dec = msgspec.json.Decoder()


def to_gemini_request(request: Request) -> dict[str, Any]:
    """The GenerateContentRequest (without `model`: one model per batch) for a request."""
    body = request.body
    out: dict[str, Any] = {}
    system, contents = _contents(body["messages"])
    if not contents:
        raise UnsupportedRequest("Gemini needs at least one user message besides the system prompt")
    out["contents"] = contents
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
            raise UnsupportedRequest(f"stop must be a string or a list of strings, got {stop!r}")
        config["stopSequences"] = stop
    if "response_format" in body:
        config.update(_response_format(body["response_format"]))
    if "tools" in body:
        out["tools"] = _tools(body["tools"])
    if "tool_choice" in body:
        out["toolConfig"] = _tool_choice(body["tool_choice"])
    unsupported = []
    for name, value in body.items():
        if name in _HANDLED:
            continue
        if name in _CONFIG:
            # A mistyped value would fail the whole inline batch at create: refuse it here.
            if type(value) not in ((int,) if name == "seed" else (int, float)):
                raise UnsupportedRequest(f"{name} must be a number for Gemini, got {value!r}")
            config[_CONFIG[name]] = value
        elif name in _NATIVE_CONFIG and request.fmt in ("native", "anthropic"):
            config[_NATIVE_CONFIG[name]] = value
        elif name in _IGNORED_WHEN and value == _IGNORED_WHEN[name]:
            continue
        else:
            unsupported.append(name)
    if unsupported:
        raise UnsupportedRequest(
            "not supported for Gemini models: "
            + ", ".join(sorted(unsupported))
            + "; remove them to send these lines to Gemini"
        )
    if config:
        out["generationConfig"] = config
    return out


def _contents(messages: list[Any]) -> tuple[list[Any], list[Any]]:
    system: list[Any] = []
    contents: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_call_id -> function name, for the tool results
    for m in messages:
        role = m["role"]
        if role in ("system", "developer") and not contents:
            system.extend(_parts(m["content"]))
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(m["content"])})
        elif role == "assistant":
            parts = _parts(m["content"]) if m.get("content") else []
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise UnsupportedRequest("tool_calls must be a list of objects for Gemini")
            for call in calls:
                fn = call.get("function")
                if not isinstance(fn, dict):
                    raise UnsupportedRequest("tool_calls[].function must be an object")
                tool_names[str(call.get("id"))] = str(fn.get("name"))
                parts.append({"functionCall": {"name": fn.get("name"), "args": _args(fn)}})
            contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            name = tool_names.get(str(m.get("tool_call_id")))
            if name is None:
                raise UnsupportedRequest(
                    "a 'tool' message answers no earlier assistant tool_call; Gemini needs "
                    "the function's name"
                )
            response = _tool_response(m["content"])
            contents.append(
                {
                    "role": "user",
                    "parts": [{"functionResponse": {"name": name, "response": response}}],
                }
            )
        else:
            where = " after the conversation started" if role in ("system", "developer") else ""
            raise UnsupportedRequest(
                f"a {role!r} message{where} cannot be sent to Gemini; put system prompts first "
                "and use user/assistant/tool turns"
            )
    return system, contents


def _args(fn: dict[str, Any]) -> Any:
    raw = fn.get("arguments")
    if not isinstance(raw, str):
        return raw or {}
    try:
        return _dec.decode(raw)
    except msgspec.DecodeError:
        raise UnsupportedRequest(
            "tool_calls arguments are not JSON; Gemini needs an object"
        ) from None


def _tool_response(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        text = content
    else:
        text = "".join(p["text"] for p in _parts(content) if "text" in p)
    try:
        value = _dec.decode(text)
    except msgspec.DecodeError:
        value = text
    return value if isinstance(value, dict) else {"content": value}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise UnsupportedRequest(f"message content of type {type(content).__name__} for Gemini")
    return [_part(p) for p in content]


def _part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    if kind == "text" and isinstance(part.get("text"), str):
        return {"text": part["text"]}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        found = _DATA_URL.match(url) if isinstance(url, str) else None
        if found is None:
            raise UnsupportedRequest(
                "image_url must be a base64 data: URL for Gemini batches (web URLs are not "
                "fetched); inline the image"
            )
        return {"inlineData": {"mimeType": found.group(1), "data": found.group(2)}}
    if kind == "image" and isinstance(part.get("source"), dict):  # Anthropic's base64 image
        src = part["source"]
        if src.get("type") == "base64":
            return {"inlineData": {"mimeType": src.get("media_type"), "data": src.get("data")}}
    raise UnsupportedRequest(f"message part of type {kind!r} is not supported for Gemini")


def _response_format(fmt: Any) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            # responseJsonSchema takes JSON Schema as is (responseSchema: an OpenAPI subset).
            return {"responseMimeType": "application/json", "responseJsonSchema": spec["schema"]}
    raise UnsupportedRequest(f"response_format {fmt!r} cannot be expressed for Gemini")


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools if isinstance(tools, list) else [None]:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise UnsupportedRequest("tools: only {'type': 'function'} tools translate to Gemini")
        decl: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters"):
            decl["parametersJsonSchema"] = fn["parameters"]
        declarations.append(decl)
    return [{"functionDeclarations": declarations}]


def _tool_choice(choice: Any) -> dict[str, Any]:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}}
    raise UnsupportedRequest(f"tool_choice {choice!r} cannot be expressed for Gemini")
