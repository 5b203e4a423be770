"""Field checks every input format shares: a refused value's reason (`Bad`), max_tokens,
deadlines, tenant and tags. Each refusal says what to write instead."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

MAX_TOKENS_LIMIT = 2**31 - 1  # no model writes more; beyond it, counts overflow downstream
# Deadlines batchd can represent: from the epoch to the end of year 9999 (unix seconds).
DEADLINE_MAX_S = 253_402_300_799


class Bad(Exception):
    """A line is invalid: its error type and a message that says what to fix."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        self.message = message


def kind(value: Any) -> str:
    """A JSON value's kind, for messages (never the value: it may be huge)."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "a list" if type(value) is list else "an object"
    )


def short(value: Any, limit: int = 80) -> str:
    """repr of a value for a message, cut to `limit` characters."""
    if isinstance(value, (dict, list)):
        return kind(value)
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_token_limit(container: dict[str, Any], where: str, names: tuple[str, ...]) -> None:
    """Each of `names` present in `container` is a positive integer within range."""
    for name in names:
        if name not in container:
            continue
        v = container[name]
        if type(v) is not int or v <= 0:
            raise Bad("bad_max_tokens", f"{where}{name} must be a positive integer, got {short(v)}")
        if v > MAX_TOKENS_LIMIT:
            raise Bad(
                "bad_max_tokens",
                f"{where}{name} {short(v)} is out of range: at most {MAX_TOKENS_LIMIT:,} "
                "(models write far fewer tokens; give the most you want back)",
            )


def tenant_tags(meta: Any, default_tenant: str) -> tuple[str, dict[str, str]]:
    if meta is None:
        return default_tenant, {}
    if not isinstance(meta, dict):
        raise Bad("bad_metadata", "'metadata' must be an object")
    tenant = meta.get("tenant", default_tenant)
    if not isinstance(tenant, str) or not tenant:
        raise Bad("bad_metadata", "'metadata.tenant' must be a non-empty string")
    raw = meta.get("tags")
    if raw is None:
        tags: dict[str, str] = {}
    elif isinstance(raw, dict):
        tags = {
            str(k): v if isinstance(v, str) else msgspec.json.encode(v).decode()
            for k, v in raw.items()
        }
    elif isinstance(raw, list):
        tags = {str(t): "" for t in raw}
    else:
        raise Bad("bad_metadata", "'metadata.tags' must be an object or a list of strings")
    return tenant, tags


def deadline(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _deadline_in_range(float(value) if abs(value) < 2**63 else -1.0, value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if dt.tzinfo is None:
                raise Bad("bad_deadline", f"deadline {short(value)} needs a time zone (e.g. 'Z')")
            try:
                at = dt.timestamp()
            except (ValueError, OverflowError):
                at = -1.0  # before the epoch or past year 9999 in UTC
            return _deadline_in_range(at, value)
    raise Bad("bad_deadline", f"deadline {short(value)} must be an ISO 8601 time or unix seconds")


def _deadline_in_range(at: float, value: Any) -> float:
    if 0 <= at <= DEADLINE_MAX_S:
        return at
    if isinstance(value, (int, float)) and 0 < at / 1000 <= DEADLINE_MAX_S:
        raise Bad(
            "bad_deadline",
            f"deadline {short(value)} looks like milliseconds since the epoch: give unix "
            f"seconds ({int(at // 1000)}) or an ISO 8601 time such as 2026-11-25T06:00Z",
        )
    raise Bad(
        "bad_deadline",
        f"deadline {short(value)} is out of range: give a time between 1970 and 9999, as "
        "unix seconds or an ISO 8601 time such as 2026-11-25T06:00Z",
    )


def check_parts(parts: list[Any], where: str, example_type: str) -> None:
    """Every content part is an object with a string 'type' (`where` names the list)."""
    for j, part in enumerate(parts):
        if type(part) is not dict or type(part.get("type")) is not str:
            raise Bad(
                "bad_content",
                f"{where}[{j}] must be an object with a string 'type' "
                f'(e.g. {{"type": "{example_type}", "text": "..."}}), got {kind(part)}',
            )
