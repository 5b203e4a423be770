"""The fast path for plain chat lines: the common shapes recognised with few checks.

`plain_request` returns the very Request that `requests.parse_request` would return, or
None for any line it does not fully recognise (a shape, field or value outside the plain
chat case: tool turns, content parts, unknown keys, other endpoints, any line that might be
invalid). None sends the line to `parse_request`, which decides; so a new input format or
endpoint needs no change here, and every Invalid reason still comes from one place.

Plain means, per format:
- OpenAI batch: exactly custom_id, method "POST", url CHAT_URL and a body;
- Anthropic batch: exactly custom_id and params (max_tokens given);
- native: the envelope keys and sampling parameters below, no custom_id;
with body keys among model, messages, max_tokens and SAMPLING_KEYS, every message exactly
{"role": str, "content": str}, a positive int max_tokens, a string system prompt, and
metadata (native) of a non-empty string tenant and string-valued tags. The key is
computed by `requests.request_key`, so it is bit-identical by construction.
"""

from __future__ import annotations

from typing import Any

from batchd import requests as core
from batchd.core.fields import deadline as parse_deadline
from batchd.requests import _NATIVE_ENVELOPE as ENVELOPE
from batchd.requests import CHAT_URL, MAX_TOKENS_LIMIT, Request

# Body parameters that parse_request passes through unchecked and that no backend treats
# as anything but a sampling setting; any other key sends the line to parse_request.
SAMPLING_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "n",
        "stop",
        "stop_sequences",
        "presence_penalty",
        "frequency_penalty",
    }
)
_BODY_KEYS = SAMPLING_KEYS | {"model", "messages", "max_tokens"}
_PARAMS_KEYS = _BODY_KEYS | {"system"}
_NATIVE_KEYS = SAMPLING_KEYS | {
    "id",
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "metadata",
    "deadline",
    "cache",
    "system",
}
_OPENAI_KEYS = frozenset({"custom_id", "method", "url", "body"})
_ANTHROPIC_KEYS = frozenset({"custom_id", "params"})


def _plain_messages(messages: Any) -> bool:
    if type(messages) is not list or not messages:
        return False
    for m in messages:
        if (
            type(m) is not dict
            or len(m) != 2
            or type(m.get("role")) is not str
            or type(m.get("content")) is not str
        ):
            return False
    return True


def _good_max_tokens(container: dict[str, Any]) -> bool:
    if "max_tokens" not in container:
        return True
    v = container["max_tokens"]
    return type(v) is int and 0 < v <= MAX_TOKENS_LIMIT


def _model(container: dict[str, Any]) -> str | None:
    model = container.get("model")
    return model if type(model) is str and model else None


def plain_request(obj: Any, line_no: int, default_tenant: str) -> Request | None:
    """The Request parse_request would give, for a plain chat line; else None."""
    if type(obj) is not dict:
        return None
    if "custom_id" in obj:
        custom_id = obj["custom_id"]
        if type(custom_id) is not str or not custom_id:
            return None
        if obj.keys() == _OPENAI_KEYS:
            return _openai(obj, line_no, custom_id, default_tenant)
        if obj.keys() == _ANTHROPIC_KEYS:
            return _anthropic(obj, line_no, custom_id, default_tenant)
        return None
    return _native(obj, line_no, default_tenant)


def _openai(obj: dict[str, Any], line_no: int, custom_id: str, tenant: str) -> Request | None:
    body = obj["body"]
    if obj["method"] != "POST" or obj["url"] != CHAT_URL or type(body) is not dict:
        return None
    model = _model(body)
    if (
        model is None
        or not body.keys() <= _BODY_KEYS
        or not _good_max_tokens(body)
        or not _plain_messages(body.get("messages"))
    ):
        return None
    key = core.request_key(tenant, body, True)  # looked up per call: one key function
    return Request(line_no, custom_id, "openai", model, tenant, {}, True, None, body, key)


def _anthropic(obj: dict[str, Any], line_no: int, custom_id: str, tenant: str) -> Request | None:
    params = obj["params"]
    if type(params) is not dict or "max_tokens" not in params:
        return None
    model = _model(params)
    messages: list[Any] = params.get("messages")  # type: ignore[assignment]
    system = params.get("system")
    if (
        model is None
        or not params.keys() <= _PARAMS_KEYS
        or not _good_max_tokens(params)
        or not _plain_messages(messages)
        or (system is not None and type(system) is not str)
    ):
        return None
    body = {k: v for k, v in params.items() if k != "system"}
    if system is not None:
        body["messages"] = [{"role": "system", "content": system}, *messages]
    key = core.request_key(tenant, body, True)  # looked up per call: one key function
    return Request(
        line_no, custom_id, "anthropic", model, tenant, {}, True, None, body, key, params
    )


def _native(obj: dict[str, Any], line_no: int, default_tenant: str) -> Request | None:
    if not obj.keys() <= _NATIVE_KEYS:
        return None
    raw_id = obj.get("id")
    if raw_id is None:
        custom_id = f"line-{line_no}"
    elif type(raw_id) is str and raw_id:
        custom_id = raw_id
    else:
        return None
    model = _model(obj)
    if model is None or not _good_max_tokens(obj):
        return None
    messages = obj.get("messages")
    if messages is None:
        prompt = obj.get("prompt")
        if type(prompt) is not str:
            return None
        messages = [{"role": "user", "content": prompt}]
    elif not _plain_messages(messages):
        return None
    system = obj.get("system")
    if system is not None and type(system) is not str:
        return None
    tenant_tags = _metadata(obj.get("metadata"), default_tenant)
    if tenant_tags is None:
        return None
    deadline_at = None
    if "deadline" in obj:
        try:
            deadline_at = parse_deadline(obj["deadline"])
        except Exception:  # a bad deadline: parse_request gives its reason
            return None
    body = {k: v for k, v in obj.items() if k not in ENVELOPE}
    body["model"] = model
    body["messages"] = (
        [{"role": "system", "content": system}, *messages] if system is not None else messages
    )
    tenant, tags = tenant_tags
    key = core.request_key(tenant, body, True)  # looked up per call: one key function
    cache_ok = obj.get("cache", True) is not False
    return Request(
        line_no, custom_id, "native", model, tenant, tags, cache_ok, deadline_at, body, key
    )


def _metadata(meta: Any, default_tenant: str) -> tuple[str, dict[str, str]] | None:
    """Tenant and tags of a plain metadata object (absent or null: the default tenant)."""
    if meta is None:
        return default_tenant, {}
    if type(meta) is not dict:
        return None
    tenant = meta.get("tenant", default_tenant)
    if type(tenant) is not str or not tenant:
        return None
    tags = meta.get("tags")
    if tags is None:
        return tenant, {}
    if type(tags) is not dict:
        return None
    for v in tags.values():
        if type(v) is not str:
            return None
    return tenant, dict(tags)
