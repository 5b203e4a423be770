"""Gemini-native input lines: the two shapes, their keys, and hostile variants (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from batchd.requests import Invalid, Request, parse_request

CONTENTS = [{"role": "user", "parts": [{"text": "hello"}]}]


def test_both_shapes_are_one_request_with_one_key() -> None:
    flat = parse_request({"id": "a", "model": "gemini-2.5-flash", "contents": CONTENTS}, 1, "t")
    shaped = parse_request(
        {"key": "a", "request": {"model": "models/gemini-2.5-flash", "contents": CONTENTS}}, 2, "t"
    )
    assert isinstance(flat, Request) and isinstance(shaped, Request)
    assert (flat.fmt, flat.model, flat.custom_id) == ("gemini", "gemini-2.5-flash", "a")
    assert (shaped.fmt, shaped.model, shaped.custom_id) == ("gemini", "gemini-2.5-flash", "a")
    assert flat.body == shaped.body == {"contents": CONTENTS}
    assert flat.key == shaped.key
    other = parse_request({"model": "gemini-2.5-flash", "contents": CONTENTS}, 3, "other")
    assert isinstance(other, Request) and other.key != flat.key  # tenant-scoped
    chat = parse_request({"model": "gemini-2.5-flash", "prompt": "hello"}, 4, "t")
    assert isinstance(chat, Request) and chat.key != flat.key  # another format, another key


def test_bad_gemini_lines_say_what_to_fix() -> None:
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "no model": ({"request": {"contents": CONTENTS}}, "missing_model"),
        "empty": ({"model": "gemini-2.5-flash", "contents": []}, "missing_messages"),
        "no parts": ({"model": "gemini-2.5-flash", "contents": [{"text": "x"}]}, "bad_content"),
    }
    for name, (line, kind) in cases.items():
        r = parse_request(line, 1, "t")
        assert isinstance(r, Invalid) and r.error_type == kind, name


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    request=st.dictionaries(
        st.sampled_from(["contents", "model", "systemInstruction", "generationConfig", "x"]),
        _json,
    ),
    top=st.dictionaries(st.sampled_from(["key", "model", "id", "metadata"]), _json),
)
def test_hostile_gemini_lines_never_raise(request: dict[str, Any], top: dict[str, Any]) -> None:
    for line in ({**top, "request": request}, {**top, **request, "contents": request.get("x")}):
        r = parse_request(line, 1, "t")
        assert isinstance(r, (Request, Invalid))
        if isinstance(r, Request):
            assert r.fmt == "gemini" and r.body["contents"]
