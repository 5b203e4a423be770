"""The C column lane (intake/_lane.c, intake.native_lane) changes nothing: a block it takes
is exactly the Columns the Python lane makes of it (ids, digests, keys, models, sizes,
max_tokens), on plain lines of every format and on generated near-plain and hostile lines
written in any JSON style (escapes, whitespace, key order); a line it does not fully read
it leaves to the Python lane. Its BLAKE2b-128 is hashlib's."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchd.intake import decode, native_lane
from batchd.intake.column_lane import ColumnLane
from batchd.intake.records import Columns
from batchd.intake.screen import BOM, MAX_DEPTH, no_long_digits
from tests.intake.test_column_lane import _ctx, _plain_lines
from tests.intake.test_fast_path import _corpus
from tests.support.hostile import (
    OPENAI_MODEL,
    encode,
    hostile_lines,
    near_plain_lines,
    open_test_services,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = open_test_services(tmp_path_factory.mktemp("native"))
    yield s
    s.close()


SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_c_lane_is_built_by_the_install() -> None:
    # scripts/install.sh builds it (setup.py); without it plans run at the Python lane's speed
    assert native_lane.AVAILABLE


@given(data=st.binary(max_size=700))
@example(data=b"x" * 128)
@example(data=b"x" * 256)
def test_its_blake2b_is_hashlib_s(data: bytes) -> None:
    assert native_lane.blake2b_16(data) == hashlib.blake2b(data, digest_size=16).digest()


def _python_columns(ctx: decode.ParseContext, lines: list[bytes], first: int) -> Columns | None:
    lane = ColumnLane(ctx)
    taken = lane.take_block(list(lines), first)
    return lane.columns(first) if taken and -1 not in taken else None


def _c_columns(ctx: decode.ParseContext, lines: list[bytes], first: int) -> Columns | None:
    return ColumnLane(ctx).take_joined(b"\n".join(lines), first)


def _same_or_left(ctx: decode.ParseContext, lines: list[bytes], first: int = 3) -> bool:
    """The C lane's Columns are the Python lane's whenever it takes the block; True if it
    did. It screens lines itself: it takes none that parse_block would not hand the Python
    lane (a byte-order mark, a 19-digit run, brackets enough to nest too deep)."""
    if b"\n" in b"".join(lines):
        return False  # not one line of a file
    fast = _c_columns(ctx, lines, first)
    if fast is None:
        return False
    joined = b"\n".join(lines)
    assert BOM not in joined and no_long_digits(joined), lines
    assert all(raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH for raw in lines), lines
    slow = _python_columns(ctx, lines, first)
    assert slow is not None, lines  # the C lane took a line the Python lane leaves
    assert msgspec.msgpack.encode(fast) == msgspec.msgpack.encode(slow), lines
    return True


def test_it_takes_plain_lines_of_every_format_with_the_python_lane_s_columns(svc: Any) -> None:
    lines = _plain_lines(300)
    for use_cache in (True, False):
        for tenant in ("t", "ténant\x00b"):
            assert _same_or_left(_ctx(svc, use_cache, tenant), lines)


def test_it_takes_the_corpus_s_plain_lines_and_leaves_the_rest(svc: Any) -> None:
    ctx = _ctx(svc, True)
    corpus = [raw for raw in _corpus() if raw and b"\n" not in raw]
    taken = [_same_or_left(ctx, [raw]) for raw in corpus]
    assert 0 < sum(taken) < len(taken)  # some plain lines, and lines it must leave
    assert not _same_or_left(ctx, [*_plain_lines(5), b'{"x": 1}'])  # one line: the whole block


def test_escapes_unicode_and_numbers_make_the_same_key_material(svc: Any) -> None:
    ctx = _ctx(svc, True)
    text = 'a "quoted" \\ back\nslash\t\u00e9\u2028\U0001f600 \x01\x7f'
    body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": text}]}
    for extra in ({}, {"temperature": 0.70}, {"top_p": 1e-7, "stop": ["\n", "é"]}, {"n": 3}):
        line = {"custom_id": "é\u0000", "method": "POST", "url": "/v1/chat/completions"}
        line["body"] = {**body, **extra, "max_tokens": 9}
        for style in (
            {},
            {"ensure_ascii": False},
            {"separators": (" , ", " : "), "indent": None},
        ):
            raw = json.dumps(line, **style).encode()  # type: ignore[arg-type]
            assert _same_or_left(ctx, [raw]), raw


def _styled(raw: bytes, ascii_only: bool, spaced: bool, reverse: bool) -> bytes:
    """The same line as another writer puts it: raw UTF-8, spaces, keys in another order."""
    obj = json.loads(raw)

    def order(x: Any) -> Any:
        if isinstance(x, dict):
            items = [(k, order(v)) for k, v in x.items()]
            return dict(reversed(items) if reverse else items)
        if isinstance(x, list):
            return [order(v) for v in x]
        return x

    seps = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(order(obj), ensure_ascii=ascii_only, separators=seps)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes no decoder takes


@SETTINGS
@given(
    raw=near_plain_lines(),
    ascii_only=st.booleans(),
    spaced=st.booleans(),
    reverse=st.booleans(),
    use_cache=st.booleans(),
)
def test_generated_near_plain_lines_in_any_style(
    svc: Any, raw: bytes, ascii_only: bool, spaced: bool, reverse: bool, use_cache: bool
) -> None:
    line = _styled(raw, ascii_only, spaced, reverse)
    _same_or_left(_ctx(svc, use_cache), [line])
    _same_or_left(_ctx(svc, use_cache), [*_plain_lines(3), line])


@SETTINGS
@given(raw=hostile_lines())
@example(raw=encode({"id": "a", "model": OPENAI_MODEL, "prompt": "x", "cache": None}))
@example(raw=encode({"id": None, "model": OPENAI_MODEL, "messages": None, "prompt": "x"}))
@example(raw=b'{"model": "gpt-5.4-nano", "prompt": "x", "temperature": -0}')
@example(raw=b'{"model": "gpt-5.4-nano", "prompt": "x", "model": "gpt-5-mini"}')
@example(raw=b'{"model": "gpt-5.4-nano", "prompt": "\xef\xbb\xbfx"}')
@example(raw=b'{"model": "gpt-5.4-nano", "prompt": "order 1234567890123456789"}')
@example(raw=b'{"model": "gpt-5.4-nano", "prompt": "x", "temperature": [' + b"[" * 130 + b"]")
def test_generated_hostile_lines(svc: Any, raw: bytes) -> None:
    _same_or_left(_ctx(svc, True), [raw])


def test_it_takes_the_plain_lines_hypothesis_draws(svc: Any) -> None:
    """Not vacuous: of the near-plain lines the Python lane takes, the C lane takes most
    (it leaves only what it does not fully read: huge integers, keys given twice ...)."""
    ctx = _ctx(svc, True)
    taken: list[bool] = []

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(raw=near_plain_lines())
    def draw(raw: bytes) -> None:
        if _python_columns(ctx, [raw], 1) is not None:
            taken.append(_same_or_left(ctx, [raw]))

    draw()
    assert len(taken) >= 10 and sum(taken) >= len(taken) // 2


def test_it_screens_long_digit_runs_and_byte_order_marks_at_any_place(svc: Any) -> None:
    """What parse_block's screens refuse (intake.screen) the C lane leaves too, wherever in
    the line it is; one digit fewer, or a mark's bytes apart, it takes."""
    ctx = _ctx(svc, True)
    for at in range(45):
        for digits, taken in ((18, True), (19, False), (30, False)):
            prompt = "x" * at + "7" * digits
            raw = encode({"model": OPENAI_MODEL, "prompt": prompt, "max_tokens": 5})
            assert _same_or_left(ctx, [raw]) is taken, raw
        raw = encode({"model": OPENAI_MODEL, "prompt": "x" * at, "max_tokens": 5})
        bom = raw.replace(b'"x', b'"\xef\xbb\xbfx', 1) if at else raw
        assert _same_or_left(ctx, [bom]) is (at == 0), bom
        apart = raw.replace(b'"x', b'"\xef\xbb\xa0x', 1)  # U+FEE0: not a mark
        assert _same_or_left(ctx, [apart]), apart
