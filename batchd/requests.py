"""Request: one valid input line, from any of the three formats; the canonical cache key.

Formats (detected per line, DESIGN §3):
- OpenAI batch:    {"custom_id", "method": "POST", "url": one of ENDPOINT_URLS, "body": {...}}
- Mistral / Together batch: {"custom_id", "body": {...}} (no method, no url): a chat request
- Anthropic batch: {"custom_id", "params": {"model", "max_tokens", "messages", "system"?}}
- native:          {"id"?, "endpoint"?, "model", "messages" | "prompt" | "input", ...,
                    "metadata"?, "deadline"?, "cache"?}; "endpoint" is chat (the default:
                    "prompt" is one user message), embeddings ("input"), completions
                    ("prompt") or responses ("input", "instructions")
- Gemini-native:   {"id"?, "model", "contents", "systemInstruction"?, "generationConfig"?, ...}
                   or Gemini's batch-file line {"key", "model"?, "request": {"contents", ...}}:
                   the GenerateContentRequest is sent to Gemini as given (_gemini_request)
The bodies of the endpoints besides chat are checked in `core.endpoints`. Parsing never
raises on bad input: it returns an Invalid with a reason.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from batchd.core import endpoints
from batchd.core.endpoints import COMPLETIONS, EMBEDDINGS, RESPONSES
from batchd.core.fields import (
    DEADLINE_MAX_S,
    MAX_TOKENS_LIMIT,
    check_parts,
    check_token_limit,
    deadline,
)
from batchd.core.fields import Bad as _Bad
from batchd.core.fields import kind as _kind
from batchd.core.fields import short as _short
from batchd.core.fields import tenant_tags as _tenant_tags

__all__ = ["COMPLETIONS", "DEADLINE_MAX_S", "EMBEDDINGS", "MAX_TOKENS_LIMIT", "RESPONSES"]

CHAT_URL = "/v1/chat/completions"
# Endpoints a line may ask for: the native format's "endpoint" -> the OpenAI batch url.
CHAT = "chat"
ENDPOINT_URLS = {
    CHAT: CHAT_URL,
    EMBEDDINGS: "/v1/embeddings",
    RESPONSES: "/v1/responses",
    COMPLETIONS: "/v1/completions",
}
URL_ENDPOINTS = {url: name for name, url in ENDPOINT_URLS.items()}
KEY_BYTES = 16

# Keys that never change the answer: left out of the cache key (and, for native
# lines, out of the vendor body).
_NON_OUTPUT_KEYS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "max_completion_tokens",
    }
)
_NATIVE_ENVELOPE = frozenset(
    {"id", "model", "messages", "prompt", "metadata", "deadline", "cache", "system", "endpoint"}
)
# A native line of another endpoint: its body is the line less these.
_NATIVE_OTHER_ENVELOPE = frozenset({"id", "metadata", "deadline", "cache", "endpoint"})

_key_encoder = msgspec.json.Encoder(order="sorted")
canonical_json = _key_encoder.encode  # what a key hashes of a body: sorted keys


class Request(msgspec.Struct, gc=False):
    """A valid line. `body` is what a call to its endpoint (an OpenAI API) receives."""

    line_no: int
    custom_id: str
    fmt: str  # openai | anthropic | native | gemini (body: the Gemini request as given)
    model: str
    tenant: str
    tags: dict[str, str]
    cache_ok: bool
    deadline_at: float | None
    body: dict[str, Any]
    key: bytes
    # Anthropic-format lines: the params exactly as given, sent to Claude unchanged.
    source_params: dict[str, Any] | None = None
    endpoint: str = CHAT  # chat | embeddings | responses | completions (ENDPOINT_URLS)


class Invalid(msgspec.Struct, gc=False):
    line_no: int
    custom_id: str
    error_type: str
    error_message: str
    tenant: str = ""
    tags: dict[str, str] = {}
    model: str = ""


class LineFault(Exception):
    """An exception nobody foresaw while validating one line; `__cause__` holds it."""

    def __init__(self, stage: str, custom_id: str) -> None:
        super().__init__(stage)
        self.stage = stage
        self.custom_id = custom_id


def _norm_content(content: Any) -> Any:
    """A single text part becomes a plain string; cache_control marks are dropped.

    Several text parts stay a list: joining them would give ["ab", "c"] and ["a", "bc"]
    one key, and one request the other's answer.
    """
    if type(content) is str or not isinstance(content, list):
        return content
    parts = []
    all_text = True
    for part in content:
        if isinstance(part, dict):
            if "cache_control" in part:
                part = {k: v for k, v in part.items() if k != "cache_control"}
            if part.get("type") != "text" or len(part) != 2:
                all_text = False
        else:
            all_text = False
        parts.append(part)
    if all_text and len(parts) == 1 and isinstance(parts[0].get("text"), str):
        return parts[0]["text"]
    return parts


def _plain_messages(messages: list[Any]) -> bool:
    """Check every message; True when every content is already canonical (a string)."""
    plain = True
    for i, m in enumerate(messages):
        if type(m) is not dict or type(m.get("role")) is not str or "content" not in m:
            raise _Bad("bad_messages", "every message needs a string 'role' and a 'content'")
        content = m["content"]
        if type(content) is not str:
            _check_content(content, m, i)
            plain = False
    return plain


def _check_content(content: Any, message: dict[str, Any], i: int) -> None:
    """A content is a string, a list of parts (objects with a string 'type'), or null in an
    assistant turn that calls tools (or a function)."""
    calls = message.get("tool_calls") or message.get("function_call")
    if content is None and message["role"] == "assistant" and calls:
        return
    if type(content) is list:
        check_parts(content, f"messages[{i}].content", "text")
        return
    raise _Bad(
        "bad_content",
        f"messages[{i}].content must be a string or a list of content parts, got "
        f"{_kind(content)}; write the text as a string",
    )


def _canonical_body(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k not in _NON_OUTPUT_KEYS}
    if "max_completion_tokens" in body and "max_tokens" not in body:
        out["max_tokens"] = body["max_completion_tokens"]
    out["messages"] = [
        m if type(m["content"]) is str else {**m, "content": _norm_content(m["content"])}
        for m in body["messages"]
    ]
    return out


def request_key(tenant: str, body: dict[str, Any], plain: bool, endpoint: str = CHAT) -> bytes:
    """BLAKE2b-128 of tenant scope, endpoint kind and the canonical JSON of the body.

    The body carries the model, the input (chat: the messages, any system prompt as the
    leading system message, whatever the input format) and every parameter that can change
    the answer. Chat keys are what they always were, so existing caches keep answering.
    """
    if endpoint != CHAT:
        material = endpoints.key_body(endpoint, body, _NON_OUTPUT_KEYS)
    elif plain and not (body.keys() & _NON_OUTPUT_KEYS):
        material = body
    else:
        material = _canonical_body(body)
    return scoped_key(key_scope(tenant, endpoint), canonical_json(material))


def key_scope(tenant: str, endpoint: str) -> bytes:
    """What a key hashes before the body: its tenant and endpoint kind."""
    return tenant.encode() + b"\x00" + endpoint.encode() + b"\x00"


def scoped_key(scope: bytes, material: bytes) -> bytes:
    """The key of a body's canonical JSON (`canonical_json`) in a `key_scope`."""
    h = scope_hash(scope)
    h.update(material)
    return h.digest()


def scope_hash(scope: bytes) -> Any:
    """A fresh key hash with the scope in it: copy it and add a body's material for its key
    (what `scoped_key` does, for a caller keying many bodies in one scope)."""
    h = _KEY_HASH.copy()  # a fresh BLAKE2b-128, without parsing its settings per key
    h.update(scope)
    return h


_KEY_HASH = hashlib.blake2b(digest_size=KEY_BYTES)


def _check_max_tokens(container: dict[str, Any], where: str) -> None:
    check_token_limit(container, where, ("max_tokens", "max_completion_tokens"))


def _model_of(container: dict[str, Any], where: str, mistral: bool = False) -> str:
    model = container.get("model")
    if not isinstance(model, str) or not model:
        hint = (
            " (Mistral's batch files name the model on the job: batchd needs it on each line)"
            if mistral and model is None
            else ""
        )
        raise _Bad("missing_model", f"no model: {where}'model' must be a non-empty string{hint}")
    return model


def _messages_of(
    container: dict[str, Any], where: str, allow_prompt: bool, mistral: bool = False
) -> list[Any]:
    messages = container.get("messages")
    if messages is None and allow_prompt and isinstance(container.get("prompt"), str):
        return [{"role": "user", "content": container["prompt"]}]
    if not isinstance(messages, list) or not messages:
        alt = " (or give 'prompt')" if allow_prompt else ""
        if mistral and "input" in container:
            alt = (
                ": a line with a body and no url is a chat request; for embeddings give "
                '"method": "POST" and "url": "/v1/embeddings"'
            )
        elif "input" in container and allow_prompt:
            alt = ' (or give "endpoint": "embeddings" or "responses" for an input)'
        raise _Bad(
            "missing_messages", f"no messages: {where}'messages' must be a non-empty list{alt}"
        )
    return messages


def parse_request(obj: Any, line_no: int, default_tenant: str) -> Request | Invalid:
    """Turn one decoded JSON line into a Request, or an Invalid that says why not."""
    fallback_id = f"line-{line_no}"
    if not isinstance(obj, dict):
        return Invalid(line_no, fallback_id, "not_an_object", "line is not a JSON object")
    raw_id = obj.get("custom_id", obj.get("id"))
    if raw_id is None and isinstance(obj.get("request"), dict):
        raw_id = obj.get("key")  # Gemini's batch-file line
    custom_id = fallback_id if raw_id is None else raw_id
    if not isinstance(custom_id, str) or not custom_id:
        return Invalid(
            line_no,
            fallback_id,
            "bad_custom_id",
            f"custom_id must be a non-empty string, got {_short(raw_id)}",
        )
    stage = ["validate"]
    try:
        return _parse(obj, line_no, custom_id, default_tenant, stage)
    except _Bad as bad:
        return Invalid(line_no, custom_id, bad.error_type, bad.message)
    except Exception as exc:
        raise LineFault(stage[0], custom_id) from exc


def _parse(
    obj: dict[str, Any], line_no: int, custom_id: str, default_tenant: str, stage: list[str]
) -> Request:
    """`stage[0]` names the step under way, for a fault nobody foresaw."""
    if "metadata" in obj:
        tenant, tags = _tenant_tags(obj["metadata"], default_tenant)
    else:
        tenant, tags = default_tenant, {}
    cache_ok = obj.get("cache", True) is not False
    stage[0] = "deadline"
    deadline_at = deadline(obj["deadline"]) if "deadline" in obj else None
    stage[0] = "validate"
    endpoint = CHAT
    if "params" in obj:
        fmt = "anthropic"
        params = obj["params"]
        if not isinstance(params, dict):
            raise _Bad("bad_params", "'params' must be an object")
        model = _model_of(params, "params.")
        messages = _messages_of(params, "params.", allow_prompt=False)
        _check_max_tokens(params, "params.")
        if "max_tokens" not in params:
            raise _Bad("bad_max_tokens", "params.max_tokens is required in the Anthropic format")
        system = params.get("system")
        body = {k: v for k, v in params.items() if k != "system"}
        if system is not None:
            body["messages"] = [{"role": "system", "content": system}, *messages]
    elif "body" in obj or "url" in obj or "method" in obj:
        fmt = "openai"
        body, endpoint = _openai_body(obj)
        model = _model_of(body, "body.", mistral="url" not in obj)
        if endpoint == CHAT:
            _messages_of(body, "body.", allow_prompt=False, mistral="url" not in obj)
            _check_max_tokens(body, "body.")
        else:
            endpoints.check_body(endpoint, body, "body.")
    elif isinstance(obj.get("request"), dict) or ("contents" in obj and "messages" not in obj):
        return _gemini_request(obj, line_no, custom_id, tenant, tags, cache_ok, deadline_at)
    else:
        fmt = "native"
        endpoint = _native_endpoint(obj.get("endpoint", CHAT))
        model = _model_of(obj, "")
        if endpoint == CHAT:
            messages = _messages_of(obj, "", allow_prompt=True)
            _check_max_tokens(obj, "")
            body = {k: v for k, v in obj.items() if k not in _NATIVE_ENVELOPE}
            body["model"] = model
            system = obj.get("system")
            body["messages"] = (
                [{"role": "system", "content": system}, *messages]
                if system is not None
                else messages
            )
        else:
            body = {k: v for k, v in obj.items() if k not in _NATIVE_OTHER_ENVELOPE}
            endpoints.check_body(endpoint, body, "")
    if body.get("stream") not in (None, False):
        where = {"anthropic": "params.", "openai": "body."}.get(fmt, "")
        raise _Bad(
            "unsupported_parameter",
            f"{where}stream is {_short(body['stream'])}: batches never stream (any vendor); "
            "remove it or set it to false",
        )
    plain = _plain_messages(body["messages"]) if endpoint == CHAT else False
    stage[0] = "key"
    key = request_key(tenant, body, plain, endpoint)
    source_params = obj["params"] if fmt == "anthropic" else None
    return Request(
        line_no,
        custom_id,
        fmt,
        model,
        tenant,
        tags,
        cache_ok,
        deadline_at,
        body,
        key,
        source_params,
        endpoint,
    )


def _openai_body(obj: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """An OpenAI batch line's body and endpoint; a Mistral / Together line (a body, no
    method and no url) is a chat request."""
    if "method" in obj or "url" in obj:
        if obj.get("method") != "POST":
            raise _Bad("bad_method", f'method must be "POST", got {_short(obj.get("method"))}')
        url = obj.get("url")
        endpoint = URL_ENDPOINTS.get(url) if type(url) is str else None
        if endpoint is None:
            raise _Bad(
                "bad_url",
                f"url must be one of {', '.join(ENDPOINT_URLS.values())}, got {_short(url)}",
            )
    else:
        endpoint = CHAT
    raw_body = obj.get("body")
    if not isinstance(raw_body, dict):
        raise _Bad("bad_body", "'body' must be an object")
    return raw_body, endpoint


def _native_endpoint(value: Any) -> str:
    if type(value) is str and value in ENDPOINT_URLS:
        return value
    raise _Bad(
        "bad_endpoint",
        f"endpoint must be one of {', '.join(ENDPOINT_URLS)} (default chat), got {_short(value)}",
    )


def salted_key(key: bytes, salt: str) -> bytes:
    """A key no other line shares: for `"cache": false` lines, sent on their own."""
    return hashlib.blake2b(key + salt.encode(), digest_size=KEY_BYTES).digest()


_GEMINI_ENVELOPE = frozenset({"id", "key", "model", "metadata", "deadline", "cache", "request"})


def _gemini_request(
    obj: dict[str, Any],
    line_no: int,
    custom_id: str,
    tenant: str,
    tags: dict[str, str],
    cache_ok: bool,
    deadline_at: float | None,
) -> Request:
    """A Gemini-native line: its GenerateContentRequest kept exactly as given (fmt "gemini")."""
    given = obj.get("request")
    req = (
        given
        if isinstance(given, dict)
        else {k: v for k, v in obj.items() if k not in _GEMINI_ENVELOPE}
    )
    where = "request." if isinstance(given, dict) else ""
    if "model" not in obj and isinstance(req.get("model"), str):
        obj = {**obj, "model": req["model"].removeprefix("models/")}
    if "model" not in obj:
        raise _Bad(
            "missing_model", "no model: a Gemini-native line needs 'model' (e.g. gemini-2.5-flash)"
        )
    model = _model_of(obj, "")
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Bad("missing_messages", f"no contents: {where}'contents' must be a non-empty list")
    for i, c in enumerate(contents):
        if type(c) is not dict or type(c.get("parts")) is not list:
            raise _Bad("bad_content", f"{where}contents[{i}] must be an object with a 'parts' list")
    body = {k: v for k, v in req.items() if k != "model"}
    material = _key_encoder.encode({"model": model, "request": body})
    key = hashlib.blake2b(
        tenant.encode() + b"\x00gemini\x00" + material, digest_size=KEY_BYTES
    ).digest()
    return Request(
        line_no, custom_id, "gemini", model, tenant, tags, cache_ok, deadline_at, body, key
    )
