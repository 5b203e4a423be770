"""Checks on one raw line that the JSON decoder does not make, or makes with a poor message.

Each returns None when the line passes, or (error_type, message) when it does not:
nesting deeper than `MAX_DEPTH` (checked on the bytes, so no decoder ever recurses that
far), a byte-order mark that is not at the start of the file, lone UTF-16 surrogates
(escaped or raw), and integers beyond 64 bits. `line_id` recovers a line's own custom_id
from bytes that did not decode, so its row still carries it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import numpy as np

MAX_DEPTH = 128  # JSON nesting levels a line may have (tool schemas rarely pass 20)
BOM = b"\xef\xbb\xbf"
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what every vendor and batchd's own records hold

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
# \d{19} (ASCII digits in a bytes pattern) found fast: every digit made "0", the rest " ".
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19
# A high surrogate escape not followed by a low one, or a low one not preceded by a high
# one; only where the backslash itself is not escaped.
_LONE_ESCAPE = re.compile(
    rb"(?<!\\)(?:\\\\)*(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf][\x80-\xbf]")
_ID_KEY = re.compile(rb'"(custom_id|id)"\s*:\s*("[^"\\]*(?:\\.[^"\\]*)*")')
_MAX_ID_CHARS = 512


def too_deep(raw: bytes) -> tuple[str, str] | None:
    """Nesting over MAX_DEPTH, found without decoding (cheap unless the line has many brackets)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return None
    depth = _max_depth(raw)
    if depth <= MAX_DEPTH:
        return None
    return (
        "nesting_too_deep",
        f"line nests {depth} levels deep, over the limit of {MAX_DEPTH}: flatten the "
        "structure (a request never needs that many levels)",
    )


def _max_depth(raw: bytes) -> int:
    brackets = _STRING.sub(b'""', raw).translate(None, _BRACKETS)
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where(np.isin(b, _OPEN), 1, -1)
    return int(np.cumsum(steps).max())


def stray_bom(raw: bytes, line_no: int) -> tuple[str, str] | None:
    if line_no == 1 or not raw.startswith(BOM):
        return None
    return (
        "byte_order_mark",
        f"line {line_no} starts with a byte-order mark (U+FEFF), which belongs only at the "
        "start of a file: files joined with `cat` keep each one's mark; strip them (for "
        "example sed -i 's/^\\xEF\\xBB\\xBF//' FILE) and submit again",
    )


def lone_surrogate(raw: bytes) -> tuple[str, str] | None:
    """A UTF-16 surrogate on its own: not Unicode, so no JSON decoder or vendor takes it."""
    m = _LONE_ESCAPE.search(raw)
    if m is not None:
        what, at = m.group()[-6:].decode(), m.end() - 6
    else:
        m = _RAW_SURROGATE.search(raw)
        if m is None:
            return None
        what, at = ascii(m.group().decode("utf-8", "surrogatepass"))[1:-1], m.start()
    return (
        "lone_surrogate",
        f"line holds a lone UTF-16 surrogate ({what} at byte {at}), which is not "
        "valid Unicode (often half of an emoji cut in two): replace it, e.g. with \\ufffd, "
        "where the file was written",
    )


def huge_int(raw: bytes, obj: Any) -> tuple[str, str] | None:
    """An integer beyond 64 bits anywhere in the decoded line (checked only when the bytes
    hold a run of 19 digits, so almost never)."""
    if no_long_digits(raw):
        return None
    path = _huge_int_path(obj)
    if path is None:
        return None
    return (
        "integer_out_of_range",
        f"{path or 'the line'} holds an integer beyond the 64-bit range ({INT_MIN:,} to "
        f"{INT_MAX:,}) that vendors and batchd accept: give a smaller number",
    )


def no_long_digits(raw: bytes) -> bool:
    """True when no run of 19 digits is in `raw` (so huge_int would find nothing)."""
    return raw.translate(_DIGITS_TO_ZERO).find(_LONG_RUN) < 0


def _huge_int_path(obj: Any) -> str | None:
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, value = stack.pop()
        t = type(value)
        if t is int:
            if not INT_MIN <= value <= INT_MAX:
                return path
        elif t is dict:
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in value.items())
        elif t is list:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def line_id(raw: bytes) -> str | None:
    """The line's own custom_id (or top-level id), read from bytes that did not decode."""
    found: dict[bytes, bytes] = {}
    for m in _ID_KEY.finditer(raw):
        name = m.group(1)
        if name in found:
            continue
        if name == b"id" and _depth_at(raw, m.start()) != 1:
            continue  # an "id" inside a message or tool call, not the line's
        found[name] = m.group(2)
        if name == b"custom_id":
            break
    text = found.get(b"custom_id") or found.get(b"id")
    if text is None or len(text) > _MAX_ID_CHARS:
        return None
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and value else None


def _depth_at(raw: bytes, pos: int) -> int:
    head = _STRING.sub(b'""', raw[:pos])
    return head.count(b"{") + head.count(b"[") - head.count(b"}") - head.count(b"]")
