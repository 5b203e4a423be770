"""The fast path (intake.plain, decode._parse_clean, intake.express) changes nothing: on a
corpus of every line kind, hypothesis-made hostile and near-plain lines included, it gives the
Request, key, Invalid reason, record, lines rows and chunk files of the per-line path
(`parse_line` through `requests.parse_request`, `decode._valid`), byte for byte."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.backends.capabilities import needs
from batchd.intake import decode
from batchd.intake.express import Express, plain_needs
from batchd.intake.plain import plain_request
from batchd.requests import Request, parse_request
from tests.intake.test_hostile_lines import CASES, OK, TOOL_TRANSCRIPT
from tests.support.hostile import (
    CLAUDE_MODEL,
    OPENAI_MODEL,
    base_line,
    check_one_row_per_line,
    encode,
    hostile_lines,
    ingest_rows,
    near_plain_lines,
    open_test_services,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = open_test_services(tmp_path_factory.mktemp("fast"))
    yield s
    s.close()


def _plain_corpus() -> list[bytes]:
    """Plain lines of each format and each model kind, and their near neighbours."""
    lines = []
    for n, (fmt, model) in enumerate(
        (f, m)
        for f in ("openai", "anthropic", "native")
        for m in (OPENAI_MODEL, CLAUDE_MODEL, "no-such-model")
    ):
        line = base_line(fmt, model, n)
        lines.append(encode(line))
        body = {"openai": line.get("body"), "anthropic": line.get("params")}.get(fmt, line)
        for extra in (
            {"temperature": 0.2, "top_p": 1, "stop": ["\n"]},
            {"system": "be brief"},
            {"system": [{"type": "text", "text": "be brief"}]},
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            {"stream": False},
            {"user": "u1"},
            {"max_completion_tokens": 5},
            {"messages": TOOL_TRANSCRIPT},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},
        ):
            lines.append(encode({**line, **extra} if fmt == "native" else _with(line, fmt, extra)))
        assert isinstance(body, dict)
    lines += [
        encode({"model": OPENAI_MODEL, "prompt": "no id"}),
        encode({"id": "c", "model": OPENAI_MODEL, "prompt": "x", "cache": False}),
        encode({"id": "m", "model": OPENAI_MODEL, "prompt": "x", "metadata": None}),
        encode({"id": "d", "model": OPENAI_MODEL, "prompt": "x", "deadline": 2_000_000_000}),
        encode({"id": "l", "model": OPENAI_MODEL, "prompt": "x", "metadata": {"tags": ["a"]}}),
        encode({"custom_id": "n", "model": OPENAI_MODEL, "prompt": "custom_id, native"}),
        encode({"custom_id": "b", "body": base_line("openai", OPENAI_MODEL, 1)["body"]}),
        encode({**base_line("openai", OPENAI_MODEL, 2), "url": "/v1/embeddings"}),
        encode({"id": "e", "model": OPENAI_MODEL, "input": "x", "endpoint": "/v1/embeddings"}),
        OK,
        OK,  # a duplicate id
        b"",
        b"   ",
        b"{not json",
    ]
    return lines


def _with(line: dict[str, Any], fmt: str, extra: dict[str, Any]) -> dict[str, Any]:
    name = "body" if fmt == "openai" else "params"
    return {**line, name: {**line[name], **extra}}


def _corpus() -> list[bytes]:
    hostile = [c[0] for c in CASES]
    return _plain_corpus() + hostile


def _same_request(raw: bytes, line_no: int = 7) -> bool:
    """plain_request gives None or exactly parse_request's Request; True if it took it."""
    try:
        obj = msgspec.json.decode(raw)
    except Exception:
        return False
    fast = plain_request(obj, line_no, "t")
    slow = parse_request(obj, line_no, "t")
    if fast is None:
        return False
    assert type(slow) is Request, (raw, slow)
    assert fast == slow
    assert fast.key == slow.key
    # insertion order too: it is the order of the vendor line's JSON
    assert msgspec.json.encode(fast.body) == msgspec.json.encode(slow.body)
    assert msgspec.json.encode(fast.source_params) == msgspec.json.encode(slow.source_params)
    return True


def _both_paths(svc: Any, lines: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    data = b"\n".join(lines) + b"\n"
    fast = ingest_rows(svc, data)
    with monkeypatch.context() as m:
        m.setattr(decode, "plain_request", lambda *a: None)  # every line per line
        m.setattr(decode, "_parse_clean", lambda raw, n, ctx, lane: decode.parse_line(raw, n, ctx))
        slow = ingest_rows(svc, data)
    check_one_row_per_line(fast[0], fast[1], data.count(b"\n"))
    return fast, slow


def test_plain_lines_take_the_fast_path_with_the_same_request() -> None:
    taken = [_same_request(raw) for raw in _corpus()]
    # the fast path is really taken for the plain lines (this test cannot pass vacuously)
    assert sum(taken) >= 12


def test_fast_path_gives_the_per_line_rows_and_chunk_files(
    svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fast_stats, fast_rows, fast_files), (slow_stats, slow_rows, slow_files) = _both_paths(
        svc, _corpus(), monkeypatch
    )
    assert fast_rows == slow_rows
    assert fast_files == slow_files and fast_files
    assert fast_stats == slow_stats
    kinds = {r["error_type"] for r in fast_rows}
    assert {None, "duplicate_custom_id", "unknown_model", "blank_line", "invalid_json"} <= kinds


def test_a_block_with_a_long_number_or_a_bom_gives_the_same_rows(
    svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks the block screen sends line by line (a BOM, 19 digits) still match."""
    big = b'{"id": "s", "seed": 12345678901234567890}'
    lines = [b"\xef\xbb\xbf" + OK, *_plain_corpus()[:6], big]
    (_, fast_rows, fast_files), (_, slow_rows, slow_files) = _both_paths(svc, lines, monkeypatch)
    assert fast_rows == slow_rows and fast_files == slow_files
    assert fast_rows[0]["error_type"] is None  # the file's own BOM is stripped


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(raw=st.one_of(near_plain_lines(), hostile_lines()))
def test_generated_lines_get_the_same_request(raw: bytes) -> None:
    _same_request(raw)


@SETTINGS
@given(lines=st.lists(st.one_of(near_plain_lines(), hostile_lines()), min_size=1, max_size=10))
def test_generated_files_give_the_same_rows(
    svc: Any, monkeypatch: pytest.MonkeyPatch, lines: list[bytes]
) -> None:
    (fast_stats, fast_rows, fast_files), (slow_stats, slow_rows, slow_files) = _both_paths(
        svc, lines, monkeypatch
    )
    assert fast_rows == slow_rows
    assert fast_files == slow_files
    assert fast_stats == slow_stats
    for path, chunk in fast_files.items():
        for line in chunk.splitlines() if path.endswith(".jsonl") else []:  # .parts: msgpack
            json.loads(line)


def _same_record(ctx: decode.ParseContext, raw: bytes, line_no: int = 7) -> bool:
    """The express lane gives None or exactly `_valid`'s record; True if it took the line."""
    try:
        item = plain_request(msgspec.json.decode(raw), line_no, ctx.default_tenant)
    except Exception:
        return False
    if item is None:
        return False
    fast = Express(ctx).record(item)
    if fast is None:
        return False
    route = ctx.router.route(item.model)
    slow = decode._valid(item, route, ctx, decode._Where())  # type: ignore[arg-type]
    assert fast == slow, raw
    assert msgspec.msgpack.encode(fast) == msgspec.msgpack.encode(slow)
    if ctx.sizes_only:  # a plan's record: the full one with its vendor line's size instead
        full = decode._valid(item, route, replace(ctx, sizes_only=False), decode._Where())  # type: ignore[arg-type]
        assert fast.vendor_line == b"" and fast.vendor_bytes == len(full.vendor_line) > 0
        assert msgspec.structs.replace(fast, vendor_line=full.vendor_line, vendor_bytes=-1) == full
    return True


def _contexts(svc: Any) -> list[decode.ParseContext]:
    """With the cache (vendor ids are keys) and without it (ids are marked uncacheable); as
    a run parses and as a plan does (vendor lines measured, not kept)."""
    return [
        decode.ParseContext(svc.router, "t", "salt", use, 1 << 20, sizes_only=sizes)
        for use in (True, False)
        for sizes in (False, True)
    ]


def test_express_lane_gives_the_record_of_valid(svc: Any) -> None:
    lines = [*_corpus(), encode({"id": "s", "model": OPENAI_MODEL, "prompt": "x", "seed": 3})]
    lines.append(encode({"id": "n2", "model": OPENAI_MODEL, "prompt": "x", "n": 2}))
    for ctx in _contexts(svc):
        taken = [_same_record(ctx, raw) for raw in lines]
        # the lane really takes the plain lines on a direct vendor model (not vacuous),
        # a "cache": false line (its salted key) among them
        assert sum(taken) >= 10
        no_cache = encode({"id": "c", "model": OPENAI_MODEL, "prompt": "x", "cache": False})
        assert _same_record(ctx, no_cache)


def test_plain_needs_is_what_capabilities_needs_says() -> None:
    for raw in _corpus():
        try:
            item = plain_request(msgspec.json.decode(raw), 1, "t")
        except Exception:
            continue
        if item is not None:
            assert plain_needs(item.body) == needs(item)


@SETTINGS
@given(raw=st.one_of(near_plain_lines(), hostile_lines()))
def test_generated_lines_get_the_record_of_valid(svc: Any, raw: bytes) -> None:
    for ctx in _contexts(svc):
        _same_record(ctx, raw)
    try:
        item = plain_request(msgspec.json.decode(raw), 1, "t")
    except Exception:
        return
    if item is not None:
        assert plain_needs(item.body) == needs(item)
