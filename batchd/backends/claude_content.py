"""Message content for Claude: OpenAI-style parts -> Claude content blocks.

- a string, or `text` parts -> text blocks (Claude refuses empty ones; `cache_control` kept
  when it is one Anthropic accepts);
- `image_url` parts -> image blocks: a `data:<media type>;base64,<data>` URL becomes a
  base64 source with its media type, an `https://` URL a URL source. Claude takes JPEG, PNG,
  GIF and WebP; another media type, a malformed data URL, bad base64, a plain `http://` URL or
  a `detail` other than "auto" (Claude has no such knob) is refused with the reason.
Anything else raises UnsupportedRequest naming the part.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from batchd.backends.base import UnsupportedRequest

HINT = "; remove it, or use the Anthropic batch format for Claude-specific params"
# Anthropic's vision docs: the image media types Claude accepts.
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*),(.*)", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def text_content(content: Any, where: str) -> Any:
    """A system prompt: the string as it is, or its parts as text blocks."""
    if isinstance(content, str):
        return content
    return blocks(content, where, images=False)


def blocks(content: Any, where: str, images: bool = True) -> list[dict[str, Any]]:
    """A message's content as Claude blocks (a string as one text block)."""
    if isinstance(content, str):
        if not content:
            raise UnsupportedRequest(f"{where}.content is empty, which Claude refuses")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise UnsupportedRequest(f"{where}.content must be a string or a non-empty list of parts")
    out = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind == "image_url" and images:
            out.append(image_block(part, at))
            continue
        if kind != "text" or not isinstance(part.get("text"), str):
            raise UnsupportedRequest(
                f"message part of type {kind!r} ({at}) is not supported for Claude"
                + (" here (images go in user turns)" if kind == "image_url" else "")
            )
        if not part["text"]:
            raise UnsupportedRequest(f"{at} has an empty text, which Claude refuses")
        extra = sorted(set(part) - {"type", "text", "cache_control"})
        if extra:
            raise UnsupportedRequest(f"not supported for Claude models: {at}.{extra[0]}" + HINT)
        if "cache_control" in part and not cache_control_ok(part["cache_control"]):
            raise UnsupportedRequest(
                f'{at}.cache_control must be {{"type": "ephemeral"}} (ttl "5m" or "1h")'
            )
        out.append(part)
    return out


def cache_control_ok(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("type") == "ephemeral"
        and value.get("ttl", "5m") in ("5m", "1h")
        and set(value) <= {"type", "ttl"}
    )


def image_block(part: dict[str, Any], at: str) -> dict[str, Any]:
    """An `image_url` part -> a Claude image block (base64 or URL source)."""
    spec = part.get("image_url")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
        raise UnsupportedRequest(f"{at}.image_url.url is missing (a data: or https: URL)")
    extra = sorted(set(part) - {"type", "image_url"}) + sorted(
        f"image_url.{k}" for k in set(spec) - {"url", "detail"}
    )
    if extra:
        raise UnsupportedRequest(f"not supported for Claude models: {at}.{extra[0]}" + HINT)
    if spec.get("detail", "auto") != "auto":
        raise UnsupportedRequest(
            f"{at}.image_url.detail {spec['detail']!r}: Claude has no image detail setting "
            "(it sizes images itself); remove detail or send the line to an OpenAI model"
        )
    url = spec["url"]
    if url[:5].lower() == "data:":
        return {"type": "image", "source": _base64_source(url, at)}
    if url[:8].lower() == "https://" and len(url) > 8 and not any(c.isspace() for c in url):
        return {"type": "image", "source": {"type": "url", "url": url}}
    shown = url[:40] + ("..." if len(url) > 40 else "")
    raise UnsupportedRequest(
        f"{at}.image_url.url {shown!r} is neither a data: URL nor an https:// URL, which are "
        "the image sources Claude takes"
    )


def _base64_source(url: str, at: str) -> dict[str, str]:
    found = _DATA_URL.fullmatch(url)
    if found is None:
        raise UnsupportedRequest(
            f"{at}.image_url.url is a malformed data URL (expected data:<type>;base64,<data>)"
        )
    media_type, flags, data = found.group(1).strip().lower(), found.group(2), found.group(3)
    if ";base64" not in flags.lower():
        raise UnsupportedRequest(f"{at}.image_url.url is a data URL that is not base64-encoded")
    if media_type not in IMAGE_MEDIA_TYPES:
        raise UnsupportedRequest(
            f"{at}: image media type {media_type or '(none)'!r} is not one Claude takes "
            f"({', '.join(IMAGE_MEDIA_TYPES)})"
        )
    if not data or len(data) % 4 or _BASE64.fullmatch(data) is None:
        raise UnsupportedRequest(f"{at}.image_url.url holds data that is not valid base64")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UnsupportedRequest(
            f"{at}.image_url.url holds data that is not valid base64"
        ) from None
    return {"type": "base64", "media_type": media_type, "data": data}
